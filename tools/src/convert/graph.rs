//! Builds an ONNX graph layer by layer, named the way `torch.onnx.export` names
//! torchvision's modules (`/layer1/layer1.0/relu_1/Relu_output_0`), so feature
//! taps and `edgebone inspect` read the same as on an exported file. Weights keep
//! their state_dict names and order.

use std::collections::HashSet;

use anyhow::{Result, bail};
use edgebone::onnx::{self, attr, tensor};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto, type_proto,
};

use crate::torch::{StateDict, TorchSize};

use super::formula;

/// Where weights come from: a checkpoint (checked against what the architecture
/// expects) or the formula.
pub enum Weights<'a> {
    Checkpoint {
        arch: &'static str,
        state_dict: &'a StateDict,
        used: HashSet<String>,
    },
    Formula {
        seed: Option<u64>,
    },
}

impl Weights<'_> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self {
            Weights::Formula { seed } => Ok(formula::fill(name, shape, *seed)),
            Weights::Checkpoint {
                arch,
                state_dict,
                used,
            } => {
                let Some(t) = state_dict.get(name) else {
                    let first = state_dict
                        .entries
                        .first()
                        .map(|(n, t)| format!(", the first is {n} {}", TorchSize(&t.shape)))
                        .unwrap_or_default();
                    bail!(
                        "tensor {name}: {arch} expects {} but the checkpoint has no such \
                         tensor (it has {}{first}): a state_dict of another architecture?",
                        TorchSize(shape),
                        state_dict.len()
                    );
                };
                if t.shape != shape {
                    bail!(
                        "tensor {name}: the checkpoint has {} but {arch} expects {}",
                        TorchSize(&t.shape),
                        TorchSize(shape)
                    );
                }
                if !t.dtype.is_float() {
                    bail!(
                        "tensor {name}: {} where {arch} expects a floating tensor",
                        t.dtype.torch_name()
                    );
                }
                used.insert(name.to_string());
                Ok(t.values.clone())
            }
        }
    }

    /// The first dimension of `name` in the checkpoint (the head's class count).
    pub fn dim0(&self, name: &str) -> Option<usize> {
        match self {
            Weights::Checkpoint { state_dict, .. } => {
                state_dict.get(name).and_then(|t| t.shape.first().copied())
            }
            Weights::Formula { .. } => None,
        }
    }

    /// Every checkpoint tensor must have been used (`num_batches_tracked`, which
    /// inference never reads, aside), as `load_state_dict(strict=True)` demands.
    fn finish(&self) -> Result<()> {
        if let Weights::Checkpoint {
            arch,
            state_dict,
            used,
        } = self
        {
            let extra: Vec<&(String, crate::torch::Tensor)> = state_dict
                .entries
                .iter()
                .filter(|(n, _)| !used.contains(n) && !n.ends_with("num_batches_tracked"))
                .collect();
            if let Some((name, t)) = extra.first() {
                bail!(
                    "tensor {name} {}: the checkpoint has it (and {} more unused) but {arch} \
                     has no such tensor: a state_dict of another architecture or variant?",
                    TorchSize(&t.shape),
                    extra.len() - 1
                );
            }
        }
        Ok(())
    }
}

pub struct Graph<'a> {
    weights: Weights<'a>,
    nodes: Vec<tract_onnx::pb::NodeProto>,
    initializers: Vec<tract_onnx::pb::TensorProto>,
    names: HashSet<String>,
    relu6_bounds: bool,
    /// BatchNorm's epsilon: 1e-5 (PyTorch's default) but 1e-3 in MobileNetV3
    /// and YOLOv5.
    pub bn_eps: f32,
    /// YOLOv5 runs its `model` Sequential's children itself (`for m in
    /// self.model`), so the exporter's scopes start at `model.N`, not `model`.
    pub flat_root: bool,
}

/// `/features/features.18/features.18.2`: one scope per module on the path, each
/// named from the last non-numeric part (a Sequential's children are
/// `features.18`, a block's are `conv1`), `_N` on the N-th reuse of a module.
fn scope(module: &str, call: usize, flat_root: bool) -> String {
    if module.is_empty() {
        return String::new();
    }
    let parts: Vec<&str> = module.split('.').collect();
    let mut named = 0;
    let mut scopes = Vec::new();
    for i in 0..parts.len() {
        if parts[i].parse::<usize>().is_err() {
            named = i;
        }
        scopes.push(parts[named..=i].join("."));
    }
    if flat_root && scopes.len() > 1 {
        scopes.remove(0);
    }
    if call > 0
        && let Some(last) = scopes.last_mut()
    {
        *last = format!("{last}_{call}");
    }
    format!("/{}", scopes.join("/"))
}

pub struct Conv {
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub bias: bool,
    /// Padding on every side; `None` is `kernel / 2` ("same" at stride 1).
    pub pad: Option<usize>,
}

impl<'a> Graph<'a> {
    pub fn new(weights: Weights<'a>) -> Graph<'a> {
        Graph {
            weights,
            nodes: Vec::new(),
            initializers: Vec::new(),
            names: HashSet::new(),
            relu6_bounds: false,
            bn_eps: 1e-5,
            flat_root: false,
        }
    }

    /// A weight as an initializer of its state_dict name.
    fn param(&mut self, name: &str, shape: &[usize]) -> Result<String> {
        let values = self.weights.take(name, shape)?;
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        self.initializers
            .push(tensor::float_tensor(name, &dims, &values));
        Ok(name.to_string())
    }

    /// A buffer the graph computes constants from (YOLOv5's anchors): taken
    /// from the checkpoint and checked like a weight, but not an initializer.
    pub fn buffer(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.weights.take(name, shape)
    }

    /// Adds `op` in `module`'s scope; returns its output's name.
    fn node(
        &mut self,
        module: &str,
        call: usize,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.node_outputs(module, call, op, inputs, attributes, 1)
            .remove(0)
    }

    /// Adds `op` with `outputs` outputs (`…_output_0`, `…_output_1`, …).
    pub fn node_outputs(
        &mut self,
        module: &str,
        call: usize,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        let base = format!("{}/{op}", scope(module, call, self.flat_root));
        let mut name = base.clone();
        let mut n = 0;
        while self.names.contains(&name) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.names.insert(name.clone());
        let outputs: Vec<String> = (0..outputs).map(|i| format!("{name}_output_{i}")).collect();
        let refs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        let mut node = onnx::node(op, &name, inputs, &refs);
        node.attribute = attributes;
        self.nodes.push(node);
        outputs
    }

    /// An operator with no weights (Reshape, Transpose, Pow, …) in `module`'s scope.
    pub fn op(
        &mut self,
        module: &str,
        op: &str,
        inputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> String {
        self.node(module, 0, op, inputs, attributes)
    }

    /// A Constant node in `module`'s scope, as the exporter writes the values a
    /// forward computes from Python numbers (not a parameter: no initializer).
    pub fn constant(&mut self, module: &str, value: TensorProto) -> String {
        self.node(
            module,
            0,
            "Constant",
            &[],
            vec![attr::tensor("value", value)],
        )
    }

    pub fn conv(&mut self, module: &str, x: &str, c: Conv) -> Result<String> {
        let k = c.kernel;
        let w = self.param(
            &format!("{module}.weight"),
            &[c.cout, c.cin / c.groups, k, k],
        )?;
        let mut inputs = vec![x.to_string(), w];
        if c.bias {
            inputs.push(self.param(&format!("{module}.bias"), &[c.cout])?);
        }
        let pad = c.pad.unwrap_or(k / 2) as i64;
        let attributes = vec![
            attr::ints_attr("dilations", vec![1, 1]),
            attr::int_attr("group", c.groups as i64),
            attr::ints_attr("kernel_shape", vec![k as i64, k as i64]),
            attr::ints_attr("pads", vec![pad; 4]),
            attr::ints_attr("strides", vec![c.stride as i64; 2]),
        ];
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.node(module, 0, "Conv", &inputs, attributes))
    }

    /// BatchNorm in inference mode, kept as a node with the state_dict's four
    /// tensors (tract folds it; `quantize int8` folds it into the convolution).
    pub fn batch_norm(&mut self, module: &str, x: &str, channels: usize) -> Result<String> {
        let mut inputs = vec![x.to_string()];
        for part in ["weight", "bias", "running_mean", "running_var"] {
            inputs.push(self.param(&format!("{module}.{part}"), &[channels])?);
        }
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let eps = vec![attr::float_attr("epsilon", self.bn_eps)];
        Ok(self.node(module, 0, "BatchNormalization", &inputs, eps))
    }

    pub fn relu(&mut self, module: &str, call: usize, x: &str) -> String {
        self.node(module, call, "Relu", &[x], vec![])
    }

    pub fn hard_swish(&mut self, module: &str, x: &str) -> String {
        self.node(module, 0, "HardSwish", &[x], vec![])
    }

    /// PyTorch's Hardsigmoid, relu6(x + 3) / 6.
    pub fn hard_sigmoid(&mut self, module: &str, x: &str) -> String {
        let attributes = vec![
            attr::float_attr("alpha", 1.0 / 6.0),
            attr::float_attr("beta", 0.5),
        ];
        self.node(module, 0, "HardSigmoid", &[x], attributes)
    }

    pub fn sigmoid(&mut self, module: &str, x: &str) -> String {
        self.node(module, 0, "Sigmoid", &[x], vec![])
    }

    /// SiLU as the exporter writes it (opset 17 has no SiLU): x · sigmoid(x).
    pub fn silu(&mut self, module: &str, x: &str) -> String {
        let s = self.sigmoid(module, x);
        self.mul(module, x, &s)
    }

    pub fn mul(&mut self, module: &str, a: &str, b: &str) -> String {
        self.node(module, 0, "Mul", &[a, b], vec![])
    }

    pub fn concat(&mut self, module: &str, inputs: &[String]) -> String {
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node(
            module,
            0,
            "Concat",
            &inputs,
            vec![attr::int_attr("axis", 1)],
        )
    }

    /// AvgPool2d(2, 2): DenseNet's transitions.
    pub fn avg_pool2(&mut self, module: &str, x: &str) -> String {
        let attributes = vec![
            attr::int_attr("ceil_mode", 0),
            attr::int_attr("count_include_pad", 1),
            attr::ints_attr("kernel_shape", vec![2, 2]),
            attr::ints_attr("pads", vec![0; 4]),
            attr::ints_attr("strides", vec![2, 2]),
        ];
        self.node(module, 0, "AveragePool", &[x], attributes)
    }

    pub fn global_avg_pool(&mut self, module: &str, x: &str) -> String {
        self.node(module, 0, "GlobalAveragePool", &[x], vec![])
    }

    /// ReLU6 as Clip(0, 6), as the exporter writes it; the bounds are Constant
    /// nodes, not initializers, so they are not counted as parameters.
    pub fn relu6(&mut self, module: &str, x: &str) -> String {
        if !self.relu6_bounds {
            for (name, v) in [("relu6_min", 0.0), ("relu6_max", 6.0)] {
                let mut k = onnx::node("Constant", name, &[], &[name]);
                k.attribute = vec![attr::tensor("value", tensor::float_tensor("", &[], &[v]))];
                self.nodes.push(k);
            }
            self.relu6_bounds = true;
        }
        self.node(module, 0, "Clip", &[x, "relu6_min", "relu6_max"], vec![])
    }

    pub fn add(&mut self, module: &str, a: &str, b: &str) -> String {
        self.node(module, 0, "Add", &[a, b], vec![])
    }

    pub fn max_pool(&mut self, module: &str, x: &str) -> String {
        let attributes = vec![
            attr::int_attr("ceil_mode", 0),
            attr::ints_attr("dilations", vec![1, 1]),
            attr::ints_attr("kernel_shape", vec![3, 3]),
            attr::ints_attr("pads", vec![1; 4]),
            attr::ints_attr("strides", vec![2, 2]),
        ];
        self.node(module, 0, "MaxPool", &[x], attributes)
    }

    /// Global average pool, flatten and the linear layer: the classifier head.
    pub fn head(&mut self, pool: &str, linear: &str, x: &str, features: usize) -> Result<String> {
        let x = self.pool_flatten(pool, x);
        self.linear(linear, &x, features, None)
    }

    pub fn pool_flatten(&mut self, pool: &str, x: &str) -> String {
        let x = self.global_avg_pool(pool, x);
        self.flatten(&x)
    }

    pub fn flatten(&mut self, x: &str) -> String {
        self.node("", 0, "Flatten", &[x], vec![attr::int_attr("axis", 1)])
    }

    /// MaxPool2d(k, stride, pad); `call` counts reuses of one module (SPPF's `m`).
    pub fn max_pool_k(
        &mut self,
        module: &str,
        call: usize,
        x: &str,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> String {
        let attributes = vec![
            attr::int_attr("ceil_mode", 0),
            attr::ints_attr("dilations", vec![1, 1]),
            attr::ints_attr("kernel_shape", vec![k as i64; 2]),
            attr::ints_attr("pads", vec![pad as i64; 4]),
            attr::ints_attr("strides", vec![stride as i64; 2]),
        ];
        self.node(module, call, "MaxPool", &[x], attributes)
    }

    /// nn.Upsample(scale_factor, "nearest") as opset 17's Resize: PyTorch's
    /// nearest picks floor(out · in / out_size), ONNX's asymmetric + floor.
    pub fn upsample_nearest(&mut self, module: &str, x: &str, scale: f32) -> String {
        let scales = self.constant(
            module,
            tensor::float_tensor("", &[4], &[1.0, 1.0, scale, scale]),
        );
        let text = |name: &str, value: &str| AttributeProto {
            name: name.into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::String as i32,
            s: value.as_bytes().to_vec(),
            ..Default::default()
        };
        let attributes = vec![
            text("coordinate_transformation_mode", "asymmetric"),
            text("mode", "nearest"),
            text("nearest_mode", "floor"),
        ];
        self.node(module, 0, "Resize", &[x, "", &scales], attributes)
    }

    /// MaxPool2d(2, 2): VGG's.
    pub fn max_pool2(&mut self, module: &str, x: &str) -> String {
        let attributes = vec![
            attr::int_attr("ceil_mode", 0),
            attr::ints_attr("dilations", vec![1, 1]),
            attr::ints_attr("kernel_shape", vec![2, 2]),
            attr::ints_attr("pads", vec![0; 4]),
            attr::ints_attr("strides", vec![2, 2]),
        ];
        self.node(module, 0, "MaxPool", &[x], attributes)
    }

    /// A Linear layer; `outputs: None` is the classifier's, whose class count
    /// the checkpoint decides (1000 for generated weights).
    pub fn linear(
        &mut self,
        linear: &str,
        x: &str,
        features: usize,
        outputs: Option<usize>,
    ) -> Result<String> {
        let classes = outputs
            .or_else(|| self.weights.dim0(&format!("{linear}.weight")))
            .unwrap_or(1000);
        let w = self.param(&format!("{linear}.weight"), &[classes, features])?;
        let b = self.param(&format!("{linear}.bias"), &[classes])?;
        let attributes = vec![
            attr::float_attr("alpha", 1.0),
            attr::float_attr("beta", 1.0),
            attr::int_attr("transB", 1),
        ];
        Ok(self.node(linear, 0, "Gemm", &[x, &w, &b], attributes))
    }

    /// The model from input `input` [1, 3, 224, 224] to `output`, renamed `logits`.
    pub fn finish(self, output: &str) -> Result<(ModelProto, usize)> {
        let classes = self
            .initializers
            .last()
            .and_then(|t| t.dims.first())
            .copied()
            .unwrap_or(0);
        let model = self.finish_as(output, "logits", &[1, 3, 224, 224], &[1, classes])?;
        Ok((model, classes as usize))
    }

    /// The model from input `input` of `input_dims` to `output`, renamed `name`,
    /// of `output_dims`.
    pub fn finish_as(
        mut self,
        output: &str,
        name: &str,
        input_dims: &[i64],
        output_dims: &[i64],
    ) -> Result<ModelProto> {
        self.weights.finish()?;
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.output.first().is_some_and(|o| o == output))
            .expect("the output is a node's");
        node.output[0] = name.into();
        Ok(ModelProto {
            ir_version: 8,
            producer_name: "edgebone quantize convert".into(),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(GraphProto {
                name: "main_graph".into(),
                node: self.nodes,
                initializer: self.initializers,
                input: vec![value("input", input_dims)],
                output: vec![value(name, output_dims)],
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::scope;

    #[test]
    fn scopes_follow_the_exporter() {
        assert_eq!(
            scope("features.18.2", 0, false),
            "/features/features.18/features.18.2"
        );
        assert_eq!(scope("layer1.1.relu", 1, false), "/layer1/layer1.1/relu_1");
        assert_eq!(
            scope("layer2.0.downsample.0", 0, false),
            "/layer2/layer2.0/downsample/downsample.0"
        );
        assert_eq!(
            scope("features.1.conv.0.0", 0, false),
            "/features/features.1/conv/conv.0/conv.0.0"
        );
        assert_eq!(scope("", 0, false), "");
        // YOLOv5's, as its shipped export names them.
        assert_eq!(
            scope("model.2.m.0.cv1.act", 0, true),
            "/model.2/m/m.0/cv1/act"
        );
        assert_eq!(scope("model.9.m", 2, true), "/model.9/m_2");
    }
}
