//! Float graph clean-ups before quantization: weight-forwarding identities
//! inlined, BatchNorm folded into convolutions, so that every convolution's
//! weights are one constant to quantize.

use std::collections::HashMap;

use anyhow::{Context, Result};
use edgebone::onnx::{Index, attr, tensor};
use tract_onnx::pb::GraphProto;

/// Replaces `Identity` nodes that only forward an initializer (PyTorch's exporter
/// shares equal weights this way) by the initializer itself, so every
/// convolution's weights can be read and quantized on their own.
pub fn inline_identities(graph: &mut GraphProto) {
    let index = Index::new(graph);
    let mut rename = HashMap::new();
    graph.node.retain(|node| {
        let forwards_weight = node.op_type == "Identity"
            && index.is_initializer(&node.input[0])
            && !index.is_graph_output(&node.output[0]);
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
            let conv = index.producer(node.input.first()?)?;
            let foldable = node.op_type == "BatchNormalization"
                && graph.node[conv].op_type == "Conv"
                && index.consumers(&node.input[0]).len() == 1
                && !index.is_graph_output(&node.input[0])
                && node.input[1..].iter().all(|t| index.is_initializer(t))
                && index.is_initializer(&graph.node[conv].input[1]);
            foldable.then_some((conv, i))
        }) else {
            return Ok(folded);
        };
        fold_one(graph, &index, conv, bn)?;
        folded += 1;
    }
}

fn fold_one(graph: &mut GraphProto, index: &Index, conv: usize, bn: usize) -> Result<()> {
    let init = |name: &str| -> Result<(Vec<i64>, Vec<f32>)> {
        let t = index
            .initializer(graph, name)
            .with_context(|| format!("{name}: not an initializer"))?;
        Ok((t.dims.clone(), tensor::floats(t)?))
    };
    let bn_node = &graph.node[bn];
    let [gamma, beta, mean, var] = [1, 2, 3, 4].map(|i| init(&bn_node.input[i]));
    let (gamma, beta, mean, var) = (gamma?.1, beta?.1, mean?.1, var?.1);
    let eps = attr::float(bn_node, "epsilon").unwrap_or(1e-5);
    let conv_node = &graph.node[conv];
    let (dims, mut weights) = init(&conv_node.input[1])?;
    let channels = dims[0] as usize;
    let mut bias = match conv_node.input.get(2).filter(|s| !s.is_empty()) {
        Some(name) => init(name)?.1,
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
        .push(tensor::float_tensor(&weight_name, &dims, &weights));
    graph
        .initializer
        .push(tensor::float_tensor(&bias_name, &[channels as i64], &bias));
    let output = graph.node[bn].output[0].clone();
    let conv_node = &mut graph.node[conv];
    conv_node.input.truncate(1);
    conv_node.input.extend([weight_name, bias_name]);
    conv_node.output[0] = output;
    graph.node.remove(bn);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{model, run};
    use edgebone::onnx::tensor::float_tensor;
    use edgebone::onnx::{drop_unused_initializers, graph_mut, node};
    use tract_onnx::pb::ModelProto;

    /// x [1,1,2,2] → Conv (2 output channels, 1×1) → BatchNormalization → y
    fn conv_bn() -> ModelProto {
        let mut bn = node(
            "BatchNormalization",
            "bn",
            &["c", "g", "b", "m", "v"],
            &["y"],
        );
        bn.attribute.push(attr::float_attr("epsilon", 1e-3));
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
