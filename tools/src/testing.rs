//! Small graphs run through tract, for the unit tests of this crate.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::type_proto::{self, Value};
use tract_onnx::pb::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TypeProto, ValueInfoProto,
};
use tract_onnx::prelude::*;

pub fn float_value(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An opset-17 model of `nodes` from graph input "x" to output "y".
pub fn model(nodes: Vec<NodeProto>, initializer: Vec<TensorProto>) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer,
            input: vec![float_value("x")],
            output: vec![float_value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs `proto` on `x` of `shape`; returns "y".
pub fn run(proto: &ModelProto, shape: [usize; 4], x: Vec<f32>) -> Vec<f32> {
    let x = tract_ndarray::Array4::from_shape_vec(shape, x).unwrap();
    let plan = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let y = plan.run(tvec![Tensor::from(x).into_tvalue()]).unwrap();
    edgebone::decode::f32_values(&y[0]).unwrap().to_vec()
}
