//! 3×3 stride-1 float convolutions by Winograd's F(4×4, 3×3): 2.25 multiplies
//! per output and input channel instead of 9. ResNets and YOLOv5 are mostly
//! made of these layers.
//!
//! Like the int8 path, it is a rewrite of the ONNX graph before tract reads it
//! ([`rewrite`]: each eligible `Conv`, with a `Relu` that only it feeds, becomes
//! one `EdgeboneWinogradConv` node) and a tract operator ([`op`]), so a plain
//! ONNX file still loads as it is. The products run on tract-linalg's f32
//! matrix kernels, so every CPU family gets its own.
//!
//! Not exact: the transforms round differently from a direct convolution (about
//! 1e-6 relative on these networks' layers); the golden and parity tests hold
//! their tolerances with it on. `ModelOptions::winograd = false` turns it off.

mod op;
mod transform;

pub(crate) use op::{WinogradConv, f32_image};

use std::collections::HashSet;

use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};

use crate::onnx::tensor::floats;
use crate::onnx::{Index, attr};

pub const WINOGRAD: &str = "EdgeboneWinogradConv";

/// Adds the parser for the nodes [`rewrite`] writes.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(WINOGRAD, op::parse);
}

/// Rewrites every eligible convolution of `model` in place; returns their names.
///
/// `keep` names tensors the caller asks for: a `Relu` whose input is one of
/// them is not folded in.
pub fn rewrite(model: &mut ModelProto, keep: &[&str]) -> Vec<String> {
    let Some(graph) = model.graph.as_mut() else {
        return vec![];
    };
    let index = Index::new(graph);
    let mut rewritten = vec![];
    let mut folded = HashSet::new();
    let mut replaced = vec![];
    for (i, node) in graph.node.iter().enumerate() {
        let Some(mut new) = winograd_node(graph, &index, node) else {
            continue;
        };
        if let Some(relu) = only_relu(graph, &index, node, keep) {
            new.output = graph.node[relu].output.clone();
            new.attribute.push(attr::int_attr("relu", 1));
            folded.insert(relu);
        }
        rewritten.push(node.name.clone());
        replaced.push((i, new));
    }
    crate::onnx::replace_nodes(graph, replaced, &folded);
    rewritten
}

/// The Winograd node for `node` if it is a 3×3, stride-1, dilation-1,
/// ungrouped float convolution with constant weights and explicit padding.
fn winograd_node(graph: &GraphProto, index: &Index, node: &NodeProto) -> Option<NodeProto> {
    if node.op_type != "Conv" || node.input.len() < 2 {
        return None;
    }
    let ones = |name| attr::ints(node, name).is_none_or(|v| v.iter().all(|&s| s == 1));
    let auto_pad = attr::string(node, "auto_pad").is_none_or(|p| p == b"NOTSET");
    if !ones("strides")
        || !ones("dilations")
        || attr::int(node, "group").unwrap_or(1) != 1
        || !auto_pad
    {
        return None;
    }
    let weights = index.constant(graph, &node.input[1])?;
    let [c_out, _, 3, 3] = weights.dims[..] else {
        return None;
    };
    floats(weights).ok()?;
    let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => floats(index.constant(graph, b)?).ok()?,
        None => vec![0.0; c_out as usize],
    };
    let pads = attr::ints(node, "pads").map_or(vec![0; 4], <[i64]>::to_vec);
    if pads.len() != 4 || pads.iter().any(|p| !(0..3).contains(p)) {
        return None;
    }
    let mut new = crate::onnx::node(
        WINOGRAD,
        &node.name,
        &node.input[..1]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &node.output.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    new.attribute = vec![
        attr::tensor("weights", weights.clone()),
        attr::floats_attr("bias", bias),
        attr::ints_attr("pads", pads),
    ];
    Some(new)
}

/// The `Relu` that alone reads `node`'s output, if that output is not asked for.
fn only_relu(graph: &GraphProto, index: &Index, node: &NodeProto, keep: &[&str]) -> Option<usize> {
    let output = node.output.first()?;
    if keep.contains(&output.as_str()) || index.is_graph_output(output) {
        return None;
    }
    let relu = index.only_consumer(output)?;
    (graph.node[relu].op_type == "Relu").then_some(relu)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(bundle: &str, file: &str) -> (Vec<String>, ModelProto) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(bundle)
            .join(file);
        let mut proto = crate::onnx::load(&path).unwrap();
        (rewrite(&mut proto, &[]), proto)
    }

    fn count(proto: &ModelProto, op: &str) -> usize {
        proto
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter(|n| n.op_type == op)
            .count()
    }

    /// ResNet-18: the 13 stride-1 3×3 convolutions (not the 7×7 stem, the three
    /// stride-2 3×3 and the three 1×1 shortcuts); the ReLU right after five of
    /// them (each block's first convolution where it is stride 1) folded in.
    #[test]
    fn resnet18_has_its_thirteen_stride_one_3x3_convolutions_rewritten() {
        let (names, proto) = rewritten("resnet18_random", "resnet18_random.onnx");
        assert_eq!(names.len(), 13, "{names:?}");
        assert_eq!(count(&proto, WINOGRAD), 13);
        assert_eq!(count(&proto, "Conv"), 20 - 13);
        assert_eq!(count(&proto, "Relu"), 17 - 5);
        let fused = proto
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .filter(|n| n.op_type == WINOGRAD && attr::int(n, "relu") == Some(1))
            .count();
        assert_eq!(fused, 5);
    }

    /// MobileNetV2's 3×3 convolutions are depthwise or stride 2: none qualifies.
    #[test]
    fn depthwise_and_strided_convolutions_are_left_alone() {
        let (names, _) = rewritten("mobilenet_v2", "mobilenet_v2.onnx");
        assert!(names.is_empty(), "{names:?}");
    }

    /// A ReLU whose input is a tap stays, so the tap keeps its pre-ReLU values.
    #[test]
    fn a_relu_reading_a_kept_tensor_is_not_folded() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/resnet18_random/resnet18_random.onnx");
        let mut proto = crate::onnx::load(&path).unwrap();
        let graph = proto.graph.as_ref().unwrap();
        let index = Index::new(graph);
        let conv = graph
            .node
            .iter()
            .find(|n| {
                winograd_node(graph, &index, n).is_some()
                    && only_relu(graph, &index, n, &[]).is_some()
            })
            .unwrap();
        let kept = conv.output[0].clone();
        rewrite(&mut proto, &[kept.as_str()]);
        assert_eq!(count(&proto, "Relu"), 17 - 4);
    }
}
