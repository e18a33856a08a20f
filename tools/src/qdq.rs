//! Which tensors to quantize, and the QDQ rewrite of the graph.
//!
//! The output follows ONNX's QDQ convention (the one ONNX Runtime's
//! `quantize_static` writes): every quantized activation gets a
//! QuantizeLinear → DequantizeLinear pair its consumers read from, weights are
//! stored as int8 behind a per-channel DequantizeLinear, biases as int32 at the
//! scale `input scale × weight scale`. A runtime that recognises the pattern can
//! run the layer in integers; any other runtime still gets the right numbers.

use std::collections::{HashMap, HashSet};

use anyhow::{Result, bail};
use tract_onnx::pb::{GraphProto, NodeProto};

use crate::calibrate::{QParams, quantize_weights};
use crate::onnx::{self, Index};

/// Layers whose weights become int8.
const WEIGHTED: &[&str] = &["Conv", "Gemm"];

/// What the rewrite will touch.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Activation tensors to quantize, in graph order.
    pub activations: Vec<String>,
    /// Node indices of the layers whose weights become int8.
    pub layers: Vec<usize>,
    /// Weighted layers left in float, by name.
    pub float_layers: Vec<String>,
}

fn layer_name(node: &NodeProto) -> String {
    if node.name.is_empty() {
        node.output[0].clone()
    } else {
        node.name.clone()
    }
}

/// Plans the quantization of `graph`. `keep_float` names layers (node names) to
/// leave in float.
pub fn plan(graph: &GraphProto, keep_float: &HashSet<String>) -> Result<Plan> {
    let index = Index::new(graph);
    for name in keep_float {
        if !graph.node.iter().any(|n| &layer_name(n) == name) {
            bail!(
                "--keep-float {name}: the model has no node of that name (see `edgebone inspect`)"
            );
        }
    }
    let data = data_tensors(graph, &index);
    let feeds_layer = feeds_weighted_layer(graph, &data);
    let quantized_layer = |n: &NodeProto| {
        WEIGHTED.contains(&n.op_type.as_str())
            && n.input
                .get(1)
                .is_some_and(|w| index.initializers.contains_key(w))
            && !keep_float.contains(&layer_name(n))
    };
    let layers: Vec<usize> = (0..graph.node.len())
        .filter(|&i| quantized_layer(&graph.node[i]))
        .collect();
    let float_layers = graph
        .node
        .iter()
        .filter(|n| WEIGHTED.contains(&n.op_type.as_str()) && !quantized_layer(n))
        .map(layer_name)
        .collect();
    let reads_quantized = |node: &NodeProto, slot: usize| match node.op_type.as_str() {
        "Conv" | "Gemm" => slot == 0 && quantized_layer(node),
        "MatMul" | "Concat" => true,
        // An elementwise product or sum of two activations (residuals, SiLU's
        // x·sigmoid(x)); with a constant it is decoding arithmetic.
        "Add" | "Mul" => node.input.iter().all(|t| data.contains(t)),
        "MaxPool" | "AveragePool" | "GlobalAveragePool" | "Resize" | "Sigmoid" => slot == 0,
        _ => false,
    };
    let mut activations = Vec::new();
    let mut seen = HashSet::new();
    let candidates = graph
        .input
        .iter()
        .map(|v| &v.name)
        .chain(graph.node.iter().flat_map(|n| &n.output));
    for tensor in candidates {
        let wanted = data.contains(tensor)
            && feeds_layer.contains(tensor)
            && index.consumers(tensor).iter().any(|&c| {
                let node = &graph.node[c];
                node.input
                    .iter()
                    .enumerate()
                    .any(|(slot, t)| t == tensor && reads_quantized(node, slot))
            });
        if wanted && seen.insert(tensor.clone()) {
            activations.push(tensor.clone());
        }
    }
    Ok(Plan {
        activations,
        layers,
        float_layers,
    })
}

/// Tensors that carry image data: computed from a graph input, not from shapes.
fn data_tensors(graph: &GraphProto, index: &Index) -> HashSet<String> {
    let mut data: HashSet<String> = index.graph_inputs.clone();
    // Nodes are in topological order (ONNX requires it).
    for node in &graph.node {
        let from_data = node.input.iter().any(|t| data.contains(t));
        if from_data && !matches!(node.op_type.as_str(), "Shape" | "Size") {
            data.extend(node.output.iter().cloned());
        }
    }
    data
}

/// Data tensors from which some weighted layer is reached: past the last layers
/// (a detector's box decoding) everything stays float.
fn feeds_weighted_layer(graph: &GraphProto, data: &HashSet<String>) -> HashSet<String> {
    let mut feeds = HashSet::new();
    for node in graph.node.iter().rev() {
        let reaches = WEIGHTED.contains(&node.op_type.as_str())
            || node.op_type == "MatMul"
            || node.output.iter().any(|t| feeds.contains(t));
        if reaches {
            feeds.extend(node.input.iter().filter(|t| data.contains(*t)).cloned());
        }
    }
    feeds
}

/// Rewrites `graph` in QDQ form. `qparams` holds the parameters of every tensor
/// in `plan.activations`.
pub fn rewrite(
    graph: &mut GraphProto,
    plan: &Plan,
    qparams: &HashMap<String, QParams>,
) -> Result<()> {
    let index = Index::new(graph);
    let mut before: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    for &layer in &plan.layers {
        let nodes = quantize_layer(graph, &index, layer, qparams)?;
        before.insert(layer, nodes);
    }
    let quantized: HashSet<&String> = plan.activations.iter().collect();
    let mut after: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut at_start = Vec::new();
    for tensor in &plan.activations {
        let q = qparams[tensor];
        graph.initializer.push(onnx::float_tensor(
            &format!("{tensor}_scale"),
            &[],
            &[q.scale],
        ));
        graph.initializer.push(onnx::int8_tensor(
            &format!("{tensor}_zero_point"),
            &[],
            &[q.zero_point],
        ));
        let pair = qdq_pair(tensor);
        match index.producer.get(tensor) {
            Some(&p) => after.entry(p).or_default().extend(pair),
            None => at_start.extend(pair),
        }
    }
    // Consumers read the dequantized tensor; graph outputs keep their name.
    for node in &mut graph.node {
        for input in &mut node.input {
            if quantized.contains(input) {
                *input = format!("{input}_dequantized");
            }
        }
    }
    let old = std::mem::take(&mut graph.node);
    graph.node = at_start;
    for (i, node) in old.into_iter().enumerate() {
        graph.node.extend(before.remove(&i).unwrap_or_default());
        graph.node.push(node);
        graph.node.extend(after.remove(&i).unwrap_or_default());
    }
    onnx::drop_unused_initializers(graph);
    Ok(())
}

fn qdq_pair(tensor: &str) -> [NodeProto; 2] {
    let (scale, zero) = (format!("{tensor}_scale"), format!("{tensor}_zero_point"));
    let (q, dq) = (
        format!("{tensor}_quantized"),
        format!("{tensor}_dequantized"),
    );
    [
        onnx::node(
            "QuantizeLinear",
            &format!("{tensor}_QuantizeLinear"),
            &[tensor, &scale, &zero],
            &[&q],
        ),
        onnx::node(
            "DequantizeLinear",
            &format!("{tensor}_DequantizeLinear"),
            &[&q, &scale, &zero],
            &[&dq],
        ),
    ]
}

/// Swaps a layer's float weights and bias for int8/int32 ones behind
/// DequantizeLinear nodes, which are returned to go right before the layer.
fn quantize_layer(
    graph: &mut GraphProto,
    index: &Index,
    layer: usize,
    qparams: &HashMap<String, QParams>,
) -> Result<Vec<NodeProto>> {
    let node = &graph.node[layer];
    let name = layer_name(node);
    let Some(input_q) = qparams.get(&node.input[0]) else {
        bail!(
            "{name}: its input {} has no calibrated range",
            node.input[0]
        );
    };
    let weight = &graph.initializer[index.initializers[&node.input[1]]];
    let dims = weight.dims.clone();
    // Per output channel: Conv's weights are [out, in, kh, kw]; Gemm's B is
    // [out, in] when transposed, [in, out] otherwise.
    let axis = match node.op_type.as_str() {
        "Gemm" if onnx::int_attribute(node, "transB") != Some(1) => 1,
        _ => 0,
    };
    let (values, scales) = quantize_weights(&onnx::floats(weight)?, &dims, axis);
    let channels = scales.len() as i64;
    let w = format!("{name}.weight");
    let mut nodes = vec![dequantize(&w, axis)];
    graph
        .initializer
        .push(onnx::int8_tensor(&format!("{w}_quantized"), &dims, &values));
    graph.initializer.push(onnx::float_tensor(
        &format!("{w}_scale"),
        &[channels],
        &scales,
    ));
    graph.initializer.push(onnx::int8_tensor(
        &format!("{w}_zero_point"),
        &[channels],
        &vec![0; channels as usize],
    ));
    let bias_name = node.input.get(2).filter(|s| !s.is_empty()).cloned();
    if let Some(bias_name) = bias_name {
        let Some(&i) = index.initializers.get(&bias_name) else {
            bail!("{name}: its bias {bias_name} is computed, expected a constant");
        };
        let bias = onnx::floats(&graph.initializer[i])?;
        if bias.len() != scales.len() {
            bail!(
                "{name}: bias has {} values for {channels} output channels",
                bias.len()
            );
        }
        let b = format!("{name}.bias");
        let bias_scales: Vec<f32> = scales.iter().map(|s| s * input_q.scale).collect();
        let q: Vec<i32> = bias
            .iter()
            .zip(&bias_scales)
            .map(|(v, s)| {
                (v / s)
                    .round_ties_even()
                    .clamp(i32::MIN as f32, i32::MAX as f32) as i32
            })
            .collect();
        graph.initializer.push(onnx::int32_tensor(
            &format!("{b}_quantized"),
            &[channels],
            &q,
        ));
        graph.initializer.push(onnx::float_tensor(
            &format!("{b}_scale"),
            &[channels],
            &bias_scales,
        ));
        graph.initializer.push(onnx::int32_tensor(
            &format!("{b}_zero_point"),
            &[channels],
            &vec![0; channels as usize],
        ));
        nodes.push(dequantize(&b, 0));
        graph.node[layer].input[2] = format!("{b}_dequantized");
    }
    graph.node[layer].input[1] = format!("{w}_dequantized");
    Ok(nodes)
}

fn dequantize(base: &str, axis: usize) -> NodeProto {
    let mut node = onnx::node(
        "DequantizeLinear",
        &format!("{base}_DequantizeLinear"),
        &[
            &format!("{base}_quantized"),
            &format!("{base}_scale"),
            &format!("{base}_zero_point"),
        ],
        &[&format!("{base}_dequantized")],
    );
    onnx::set_int_attribute(&mut node, "axis", axis as i64);
    node
}
