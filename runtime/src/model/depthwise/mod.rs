//! Float depthwise convolutions (one filter per channel: MobileNet's 3×3 and
//! EfficientNet's 5×5 layers) as one operator of ours, with the ReLU or Clip
//! that follows folded in.
//!
//! tract's depthwise convolution is its generic loop on x86 (measured: 12.9 of
//! MobileNetV2's 22 ms on the AVX-512 machine, against ONNX Runtime's 7 ms for
//! the whole network) and leaves the ReLU6 after it to a separate pass. Like
//! the Winograd and int8 paths, this is a rewrite of the ONNX graph before tract
//! reads it ([`rewrite`]) plus a tract operator ([`op`]), so a plain ONNX file
//! loads as it is. Its arithmetic is the int8 depthwise kernel's shape with
//! float lanes: a padded, phase-split plane per channel and runs of outputs
//! summed over every tap in registers.

mod op;

pub(crate) use op::DepthwiseConv;

use std::collections::HashSet;

use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};

use crate::onnx::qdq::{Bounds, clamp_bounds};
use crate::onnx::tensor::floats;
use crate::onnx::{Index, attr};

pub const DEPTHWISE: &str = "EdgeboneDepthwiseConv";

/// Whether the loader uses this operator on this target. x86-64 only: there
/// tract's depthwise convolution is its generic loop. On aarch64 tract-linalg
/// has a NEON depthwise kernel over channel-contiguous data, and this one counted
/// more instructions (MobileNetV2 float on a Cortex-A72: 176 M against 148 M; the
/// padded plane's copy and the short runs at 7- and 14-wide rows cost more than
/// tract's whole kernel). armv7 keeps tract's too: there is no counting tool for
/// it here, so no measurement to decide on.
pub const PAYS: bool = cfg!(target_arch = "x86_64");

/// Kernel taps the operator sums in one pass (7×7 and smaller).
pub const MAX_TAPS: usize = 49;

/// Adds the parser for the nodes [`rewrite`] writes.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(DEPTHWISE, op::parse);
}

/// Rewrites every eligible depthwise convolution of `model` in place; returns
/// their names. `keep` names tensors the caller asks for: a ReLU or Clip whose
/// input is one of them is not folded in.
pub fn rewrite(model: &mut ModelProto, keep: &[&str]) -> Vec<String> {
    let Some(graph) = model.graph.as_mut() else {
        return vec![];
    };
    let index = Index::new(graph);
    let mut rewritten = vec![];
    let mut folded = HashSet::new();
    let mut replaced = vec![];
    for (i, node) in graph.node.iter().enumerate() {
        let Some(mut new) = depthwise_node(graph, &index, node) else {
            continue;
        };
        if let Some((clamp, bounds)) = only_clamp(graph, &index, node, keep) {
            new.output = graph.node[clamp].output.clone();
            new.attribute.push(attr::float_attr("min", bounds.lo));
            new.attribute.push(attr::float_attr("max", bounds.hi));
            folded.insert(clamp);
        }
        rewritten.push(node.name.clone());
        replaced.push((i, new));
    }
    crate::onnx::replace_nodes(graph, replaced, &folded);
    rewritten
}

/// The depthwise node for `node` if it is a 2-D float convolution with one
/// constant filter per channel, strides 1 or 2, no dilation, explicit padding
/// smaller than the kernel and at most [`MAX_TAPS`] taps.
fn depthwise_node(graph: &GraphProto, index: &Index, node: &NodeProto) -> Option<NodeProto> {
    if node.op_type != "Conv" || node.input.len() < 2 {
        return None;
    }
    let weights = index.constant(graph, &node.input[1])?;
    let [channels, 1, kh, kw] = weights.dims[..] else {
        return None;
    };
    let strides = attr::ints(node, "strides").map_or(vec![1, 1], <[i64]>::to_vec);
    let ones = attr::ints(node, "dilations").is_none_or(|d| d.iter().all(|&d| d == 1));
    let auto_pad = attr::string(node, "auto_pad").is_none_or(|p| p == b"NOTSET");
    let pads = attr::ints(node, "pads").map_or(vec![0; 4], <[i64]>::to_vec);
    let fits = |p: &[i64]| p[0] < kh && p[2] < kh && p[1] < kw && p[3] < kw;
    if channels < 2
        || attr::int(node, "group") != Some(channels)
        || !(1..=7).contains(&kh)
        || !(1..=7).contains(&kw)
        || strides.len() != 2
        || strides.iter().any(|s| !(1..=2).contains(s))
        || !ones
        || !auto_pad
        || pads.len() != 4
        || pads.iter().any(|&p| p < 0)
        || !fits(&pads)
    {
        return None;
    }
    floats(weights).ok()?;
    let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => floats(index.constant(graph, b)?).ok()?,
        None => vec![0.0; channels as usize],
    };
    if bias.len() != channels as usize {
        return None;
    }
    let mut new = crate::onnx::node(
        DEPTHWISE,
        &node.name,
        &[node.input[0].as_str()],
        &node.output.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    new.attribute = vec![
        attr::tensor("weights", weights.clone()),
        attr::floats_attr("bias", bias),
        attr::ints_attr("pads", pads),
        attr::ints_attr("strides", strides),
    ];
    Some(new)
}

/// The `Relu` or `Clip` with constant bounds that alone reads `node`'s output,
/// if that output is not asked for.
fn only_clamp(
    graph: &GraphProto,
    index: &Index,
    node: &NodeProto,
    keep: &[&str],
) -> Option<(usize, Bounds)> {
    let output = node.output.first()?;
    if keep.contains(&output.as_str()) || index.is_graph_output(output) {
        return None;
    }
    let clamp = index.only_consumer(output)?;
    let bounds = clamp_bounds(graph, index, &graph.node[clamp]).ok()??;
    // NaN bounds or an empty interval stay with tract, which defines them.
    (bounds.lo <= bounds.hi).then_some((clamp, bounds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(bundle: &str) -> ModelProto {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(bundle)
            .join(format!("{bundle}.onnx"));
        crate::onnx::load(&path).unwrap()
    }

    fn count(proto: &ModelProto, op: &str) -> usize {
        let graph = proto.graph.as_ref().unwrap();
        graph.node.iter().filter(|n| n.op_type == op).count()
    }

    /// MobileNetV2: its 17 depthwise 3×3 convolutions, each with the ReLU6
    /// (Clip 0..6) after it folded in; the 35 ordinary convolutions stay.
    #[test]
    fn mobilenet_v2_has_its_seventeen_depthwise_convolutions_rewritten() {
        let mut proto = load("mobilenet_v2");
        let (convs, clips) = (count(&proto, "Conv"), count(&proto, "Clip"));
        let names = rewrite(&mut proto, &[]);
        assert_eq!(names.len(), 17, "{names:?}");
        assert_eq!(count(&proto, DEPTHWISE), 17);
        assert_eq!(count(&proto, "Conv"), convs - 17);
        assert_eq!(count(&proto, "Clip"), clips - 17);
        let graph = proto.graph.as_ref().unwrap();
        for n in graph.node.iter().filter(|n| n.op_type == DEPTHWISE) {
            assert_eq!(
                (attr::float(n, "min"), attr::float(n, "max")),
                (Some(0.0), Some(6.0))
            );
        }
    }

    /// ResNet-18 has no grouped convolution: nothing changes.
    #[test]
    fn ordinary_convolutions_are_left_alone() {
        let mut proto = load("resnet18_random");
        assert!(rewrite(&mut proto, &[]).is_empty());
    }

    /// A Clip whose input is a tap stays, so the tap keeps its unclipped values.
    #[test]
    fn a_clamp_reading_a_kept_tensor_is_not_folded() {
        let mut proto = load("mobilenet_v2");
        let clips = count(&proto, "Clip");
        let graph = proto.graph.as_ref().unwrap();
        let index = Index::new(graph);
        let conv = graph
            .node
            .iter()
            .find(|n| depthwise_node(graph, &index, n).is_some())
            .unwrap();
        let kept = conv.output[0].clone();
        rewrite(&mut proto, &[kept.as_str()]);
        assert_eq!(count(&proto, "Clip"), clips - 16);
    }
}
