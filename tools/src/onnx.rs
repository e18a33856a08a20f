//! Reading and rewriting ONNX graphs at the protobuf level.
//!
//! tract parses ONNX into its own graph, which it cannot write back as ONNX; the
//! quantized model must stay a standard ONNX file (ONNX Runtime and Netron read it),
//! so the rewrite works on tract-onnx's prost messages directly.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use prost::Message;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::Framework;

pub fn load(path: &Path) -> Result<ModelProto> {
    let proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| anyhow::anyhow!("{}: not an ONNX model: {e:#}", path.display()))?;
    if proto.graph.is_none() {
        bail!("{}: the ONNX file has no graph", path.display());
    }
    Ok(proto)
}

pub fn save(proto: &ModelProto, path: &Path) -> Result<()> {
    std::fs::write(path, proto.encode_to_vec()).with_context(|| path.display().to_string())
}

pub fn graph_mut(proto: &mut ModelProto) -> &mut GraphProto {
    proto.graph.as_mut().expect("checked at load")
}

/// A float tensor's values, whichever of ONNX's two encodings it uses.
pub fn floats(tensor: &TensorProto) -> Result<Vec<f32>> {
    if tensor.data_type != DataType::Float as i32 {
        bail!(
            "tensor {}: expected float data, found ONNX data type {}",
            tensor.name,
            tensor.data_type
        );
    }
    if !tensor.float_data.is_empty() {
        return Ok(tensor.float_data.clone());
    }
    if !tensor.raw_data.len().is_multiple_of(4) {
        bail!(
            "tensor {}: raw data is not a whole number of f32",
            tensor.name
        );
    }
    Ok(tensor
        .raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

pub fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub fn int8_tensor(name: &str, dims: &[i64], values: &[i8]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Int8 as i32,
        raw_data: values.iter().map(|v| *v as u8).collect(),
        ..Default::default()
    }
}

pub fn int32_tensor(name: &str, dims: &[i64], values: &[i32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Int32 as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn int_attribute(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

pub fn float_attribute(node: &NodeProto, name: &str) -> Option<f32> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.f)
}

pub fn set_int_attribute(node: &mut NodeProto, name: &str, value: i64) {
    use tract_onnx::pb::attribute_proto::AttributeType;
    node.attribute.retain(|a| a.name != name);
    node.attribute.push(AttributeProto {
        name: name.to_string(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    });
}

/// Where each tensor is made and used.
pub struct Index {
    pub initializers: HashMap<String, usize>,
    /// tensor → node producing it
    pub producer: HashMap<String, usize>,
    /// tensor → nodes reading it (a node appears once per input slot)
    pub consumers: HashMap<String, Vec<usize>>,
    pub graph_inputs: HashSet<String>,
    pub graph_outputs: HashSet<String>,
}

impl Index {
    pub fn new(graph: &GraphProto) -> Index {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for output in &node.output {
                producer.insert(output.clone(), i);
            }
            for input in node.input.iter().filter(|s| !s.is_empty()) {
                consumers.entry(input.clone()).or_default().push(i);
            }
        }
        let initializers: HashMap<String, usize> = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Index {
            graph_inputs: graph
                .input
                .iter()
                .map(|v| v.name.clone())
                .filter(|n| !initializers.contains_key(n))
                .collect(),
            graph_outputs: graph.output.iter().map(|v| v.name.clone()).collect(),
            initializers,
            producer,
            consumers,
        }
    }

    pub fn consumers(&self, tensor: &str) -> &[usize] {
        self.consumers
            .get(tensor)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }
}

/// Replaces `Identity` nodes that only forward an initializer (PyTorch's exporter
/// shares equal weights this way) by the initializer itself, so every
/// convolution's weights can be read and quantized on their own.
pub fn inline_identities(graph: &mut GraphProto) {
    let index = Index::new(graph);
    let mut rename = HashMap::new();
    graph.node.retain(|node| {
        let forwards_weight = node.op_type == "Identity"
            && index.initializers.contains_key(&node.input[0])
            && !index.graph_outputs.contains(&node.output[0]);
        if forwards_weight {
            rename.insert(node.output[0].clone(), node.input[0].clone());
        }
        !forwards_weight
    });
    for node in &mut graph.node {
        for input in &mut node.input {
            if let Some(source) = rename.get(input) {
                *input = source.clone();
            }
        }
    }
}

/// Folds each `BatchNormalization` that follows a convolution with constant
/// weights into that convolution's weights and bias.
pub fn fold_batch_norms(graph: &mut GraphProto) -> Result<usize> {
    let mut folded = 0;
    loop {
        let index = Index::new(graph);
        let Some((conv, bn)) = graph.node.iter().enumerate().find_map(|(i, node)| {
            let conv = *index.producer.get(node.input.first()?)?;
            let foldable = node.op_type == "BatchNormalization"
                && graph.node[conv].op_type == "Conv"
                && index.consumers(&node.input[0]).len() == 1
                && !index.graph_outputs.contains(&node.input[0])
                && node.input[1..]
                    .iter()
                    .all(|t| index.initializers.contains_key(t))
                && index.initializers.contains_key(&graph.node[conv].input[1]);
            foldable.then_some((conv, i))
        }) else {
            return Ok(folded);
        };
        fold_one(graph, &index, conv, bn)?;
        folded += 1;
    }
}

fn fold_one(graph: &mut GraphProto, index: &Index, conv: usize, bn: usize) -> Result<()> {
    let init = |name: &str| floats(&graph.initializer[index.initializers[name]]);
    let bn_node = &graph.node[bn];
    let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|i| init(&bn_node.input[i]));
    let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
    let eps = float_attribute(bn_node, "epsilon").unwrap_or(1e-5);
    let conv_node = &graph.node[conv];
    let weight_tensor = &graph.initializer[index.initializers[&conv_node.input[1]]];
    let dims = weight_tensor.dims.clone();
    let mut weights = floats(weight_tensor)?;
    let channels = dims[0] as usize;
    let mut bias = match conv_node.input.get(2).filter(|s| !s.is_empty()) {
        Some(name) => init(name)?,
        None => vec![0.0; channels],
    };
    let per_channel = weights.len() / channels;
    for c in 0..channels {
        let factor = gamma[c] / (var[c] + eps).sqrt();
        for w in &mut weights[c * per_channel..(c + 1) * per_channel] {
            *w *= factor;
        }
        bias[c] = (bias[c] - mean[c]) * factor + beta[c];
    }
    let name = graph.node[conv].name.clone();
    let (weight_name, bias_name) = (
        format!("{name}.folded_weight"),
        format!("{name}.folded_bias"),
    );
    graph
        .initializer
        .push(float_tensor(&weight_name, &dims, &weights));
    graph
        .initializer
        .push(float_tensor(&bias_name, &[channels as i64], &bias));
    let output = graph.node[bn].output[0].clone();
    let conv_node = &mut graph.node[conv];
    conv_node.input.truncate(1);
    conv_node.input.extend([weight_name, bias_name]);
    conv_node.output[0] = output;
    graph.node.remove(bn);
    Ok(())
}

/// The value of a one-element float constant: an initializer or the output of a
/// `Constant` node (PyTorch exports Clip's bounds that way).
pub fn scalar(graph: &GraphProto, index: &Index, name: &str) -> Option<f32> {
    let tensor = match index.initializers.get(name) {
        Some(&i) => &graph.initializer[i],
        None => {
            let node = &graph.node[*index.producer.get(name)?];
            if node.op_type != "Constant" {
                return None;
            }
            node.attribute
                .iter()
                .find(|a| a.name == "value")?
                .t
                .as_ref()?
        }
    };
    match floats(tensor).ok()?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// Drops `Constant` nodes whose output nothing reads any more.
pub fn drop_dead_constants(graph: &mut GraphProto) {
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.clone())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    graph
        .node
        .retain(|n| n.op_type != "Constant" || n.output.iter().any(|o| used.contains(o)));
}

/// Drops initializers no node reads any more (and their graph-input entries,
/// which old exporters add for every weight).
pub fn drop_unused_initializers(graph: &mut GraphProto) {
    let used: HashSet<String> = graph.node.iter().flat_map(|n| n.input.clone()).collect();
    let dropped: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| !used.contains(&t.name))
        .map(|t| t.name.clone())
        .collect();
    graph.initializer.retain(|t| !dropped.contains(&t.name));
    graph.input.retain(|v| !dropped.contains(&v.name));
}

/// Small graphs run through tract, for the unit tests of this crate.
#[cfg(test)]
pub mod testing {
    use super::*;
    use tract_onnx::pb::type_proto::{self, Value};
    use tract_onnx::pb::{OperatorSetIdProto, TypeProto, ValueInfoProto};
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
}

#[cfg(test)]
mod tests {
    use super::testing::{model, run};
    use super::*;

    /// x [1,1,2,2] → Conv (2 output channels, 1×1) → BatchNormalization → y
    fn conv_bn() -> ModelProto {
        let mut bn = node(
            "BatchNormalization",
            "bn",
            &["c", "g", "b", "m", "v"],
            &["y"],
        );
        bn.attribute.push(AttributeProto {
            name: "epsilon".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Float as i32,
            f: 1e-3,
            ..Default::default()
        });
        model(
            vec![node("Conv", "conv", &["x", "w", "wb"], &["c"]), bn],
            vec![
                float_tensor("w", &[2, 1, 1, 1], &[0.5, -2.0]),
                float_tensor("wb", &[2], &[0.1, 0.2]),
                float_tensor("g", &[2], &[1.5, 0.7]),
                float_tensor("b", &[2], &[-0.3, 0.4]),
                float_tensor("m", &[2], &[0.2, -1.0]),
                float_tensor("v", &[2], &[4.0, 0.25]),
            ],
        )
    }

    fn run_conv_bn(proto: &ModelProto) -> Vec<f32> {
        run(proto, [1, 1, 2, 2], vec![1.0, -2.0, 3.0, 0.5])
    }

    #[test]
    fn batch_norm_folds_into_the_convolution() {
        let before = conv_bn();
        let mut after = before.clone();
        let graph = graph_mut(&mut after);
        assert_eq!(fold_batch_norms(graph).unwrap(), 1);
        drop_unused_initializers(graph);
        assert_eq!(graph.node.len(), 1);
        assert_eq!(graph.node[0].output[0], "y");
        assert_eq!(graph.initializer.len(), 2);
        let (a, b) = (run_conv_bn(&before), run_conv_bn(&after));
        assert_eq!(a.len(), 8);
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn identities_of_weights_are_inlined() {
        let mut proto = conv_bn();
        let graph = graph_mut(&mut proto);
        graph
            .node
            .insert(0, node("Identity", "id", &["w"], &["w2"]));
        graph.node[1].input[1] = "w2".into();
        inline_identities(graph);
        assert_eq!(graph.node.len(), 2);
        assert_eq!(graph.node[0].input, ["x", "w", "wb"]);
    }
}
