//! `named_parameters()` for an ONNX file: every weight with a PyTorch-style name.
//!
//! `torch.onnx.export` folds BatchNorm into convolutions and leaves the folded
//! tensors with generated names (`onnx::Conv_538`). Such a tensor is named after
//! the node that consumes it, in PyTorch's dotted form.

use std::path::Path;

use tract_onnx::pb::{
    GraphProto, NodeProto, ValueInfoProto, tensor_shape_proto::dimension, type_proto,
};

use crate::error::Result;
use crate::onnx::{self, Index};

#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub shape: Vec<i64>,
    pub dtype: &'static str,
}

impl Parameter {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|d| (*d).max(0) as u64).product()
    }
}

/// A graph input or output: name, element type and shape (`?` for symbolic dims).
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub parameters: Vec<Parameter>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

impl ModelInfo {
    pub fn total_parameters(&self) -> u64 {
        self.parameters.iter().map(Parameter::numel).sum()
    }
}

pub fn inspect(path: &Path) -> Result<ModelInfo> {
    // `load` checked that there is a graph.
    let graph = onnx::load(path)?.graph.unwrap_or_default();
    let index = Index::new(&graph);
    Ok(ModelInfo {
        parameters: parameters(&graph, &index),
        inputs: ports(
            graph
                .input
                .iter()
                .filter(|i| index.graph_inputs().contains(&i.name)),
        ),
        outputs: ports(graph.output.iter()),
    })
}

fn parameters(graph: &GraphProto, index: &Index) -> Vec<Parameter> {
    let uses = |tensor: &str| -> Vec<&NodeProto> {
        let readers = index.consumers(tensor).iter();
        readers.map(|&i| &graph.node[i]).collect()
    };
    let mut params = Vec::new();
    for init in &graph.initializer {
        let readers = uses(&init.name);
        let dtype = dtype_name(init.data_type);
        // The exporter shares identical tensors (zero biases of a random model)
        // through Identity nodes: each alias is a parameter of its own module.
        let aliases: Vec<&str> = readers
            .iter()
            .filter(|node| node.op_type == "Identity")
            .filter_map(|node| node.output.first().map(String::as_str))
            .collect();
        let names: Vec<&str> = if !aliases.is_empty() && aliases.len() == readers.len() {
            aliases
        } else {
            vec![init.name.as_str()]
        };
        for name in names {
            let first_use = uses(name).first().and_then(|node| {
                let slot = node.input.iter().position(|t| t == name)?;
                Some((*node, slot))
            });
            params.push(Parameter {
                name: pytorch_name(name, first_use),
                shape: init.dims.clone(),
                dtype,
            });
        }
    }
    params
}

/// Keeps a name PyTorch gave; derives one from the consuming node otherwise.
fn pytorch_name(tensor: &str, user: Option<(&NodeProto, usize)>) -> String {
    let generated = tensor.starts_with("onnx::") || tensor.starts_with('/');
    match user {
        Some((node, ix)) if generated => {
            let suffix = match ix {
                1 => "weight".to_string(),
                2 => "bias".to_string(),
                _ => format!("input{ix}"),
            };
            match module_path(&node.name) {
                Some(module) => format!("{module}.{suffix}"),
                None => tensor.to_string(),
            }
        }
        _ => tensor.to_string(),
    }
}

/// `/layer1/layer1.0/conv1/Conv` → `layer1.0.conv1`: each scope repeats its
/// parent's name before a dot (`features` → `features.0`), so only the new part
/// is appended.
fn module_path(node_name: &str) -> Option<String> {
    let scopes: Vec<&str> = node_name.split('/').filter(|s| !s.is_empty()).collect();
    let (_, modules) = scopes.split_last()?;
    let mut path = String::new();
    let mut parent = "";
    for scope in modules {
        match scope.strip_prefix(parent).filter(|r| r.starts_with('.')) {
            Some(rest) if !parent.is_empty() => path.push_str(rest),
            _ => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(scope);
            }
        }
        parent = scope;
    }
    (!path.is_empty()).then_some(path)
}

fn ports<'a>(values: impl Iterator<Item = &'a ValueInfoProto>) -> Vec<Port> {
    values
        .map(|v| {
            let tensor = v.r#type.as_ref().and_then(|t| match &t.value {
                Some(type_proto::Value::TensorType(t)) => Some(t),
                _ => None,
            });
            let shape = tensor
                .and_then(|t| t.shape.as_ref())
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(dimension::Value::DimValue(v)) => v.to_string(),
                            Some(dimension::Value::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Port {
                name: v.name.clone(),
                dtype: dtype_name(tensor.map(|t| t.elem_type).unwrap_or(0)),
                shape,
            }
        })
        .collect()
}

/// ONNX `TensorProto.DataType` codes, in PyTorch's spelling.
fn dtype_name(code: i32) -> &'static str {
    match code {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        16 => "bfloat16",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_follow_pytorch() {
        let cases = [
            ("/features/features.0/features.0.0/Conv", "features.0.0"),
            (
                "/features/features.1/conv/conv.0/conv.0.0/Conv",
                "features.1.conv.0.0",
            ),
            ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
            (
                "/layer2/layer2.0/downsample/downsample.0/Conv",
                "layer2.0.downsample.0",
            ),
            ("/conv1/Conv", "conv1"),
            ("/model.0/conv/Conv", "model.0.conv"),
        ];
        for (node, module) in cases {
            assert_eq!(module_path(node).as_deref(), Some(module), "{node}");
        }
        assert_eq!(module_path("Conv"), None);
    }

    #[test]
    fn generated_names_take_the_consumer_and_slot() {
        let node = NodeProto {
            name: "/features/features.0/features.0.0/Conv".into(),
            op_type: "Conv".into(),
            ..Default::default()
        };
        assert_eq!(
            pytorch_name("onnx::Conv_538", Some((&node, 1))),
            "features.0.0.weight"
        );
        assert_eq!(
            pytorch_name("onnx::Conv_539", Some((&node, 2))),
            "features.0.0.bias"
        );
        assert_eq!(
            pytorch_name("classifier.1.weight", Some((&node, 1))),
            "classifier.1.weight"
        );
    }
}
