//! Which tensors to quantize, and the QDQ rewrite of the graph.
//!
//! The output follows ONNX's QDQ convention (the one ONNX Runtime's
//! `quantize_static` writes): every quantized activation gets a
//! QuantizeLinear → DequantizeLinear pair its consumers read from, weights are
//! stored as int8 behind a per-channel DequantizeLinear, biases as int32 at the
//! scale `input scale × weight scale`. A runtime that recognises the pattern can
//! run the layer in integers; any other runtime still gets the right numbers.
//! The convention's arithmetic is [`edgebone::onnx::qdq`], which the runtime's
//! int8 rewrite reads these files back with.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail};
use edgebone::onnx::qdq::{
    Bounds, DEQUANTIZE, QParams, QUANTIZE, clamp_bounds, quantize_bias, quantize_weights,
};
use edgebone::onnx::{self, Index, attr, tensor};
use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};

use crate::calibrate::weight_error_shift;

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
    /// ReLU/ReLU6 clamps that may be folded into their layer's quantize step.
    pub clamps: Vec<Clamp>,
}

/// A ReLU or Clip between a quantized layer and the quantize step of its output.
/// When the quantized range lies inside the clamp's bounds, the quantize step
/// already clamps, so the layer writes the clamp's output tensor itself and the
/// clamp node goes: `DQ → Conv → Q`, the form ONNX Runtime's `quantize_static`
/// writes and an integer runtime runs as one layer (requantize and clamp in one
/// step).
#[derive(Debug, Clone)]
pub struct Clamp {
    pub node: usize,
    pub layer: usize,
    /// The clamp's output: the quantized activation.
    pub tensor: String,
    pub bounds: Bounds,
}

/// The clamps of `activations` that sit right after a quantized layer.
fn clamps(
    graph: &GraphProto,
    index: &Index,
    activations: &[String],
    layers: &[usize],
) -> Vec<Clamp> {
    let mut found = Vec::new();
    for tensor in activations {
        let Some(node) = index.producer(tensor) else {
            continue;
        };
        let clamp = &graph.node[node];
        // A bound that is not a constant makes the clamp not foldable.
        let Ok(Some(bounds)) = clamp_bounds(graph, index, clamp) else {
            continue;
        };
        let input = &clamp.input[0];
        let Some(layer) = index.producer(input) else {
            continue;
        };
        if index.only_consumer(input) == Some(node)
            && layers.contains(&layer)
            && !index.is_graph_output(tensor)
        {
            found.push(Clamp {
                node,
                layer,
                tensor: tensor.clone(),
                bounds,
            });
        }
    }
    found
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
            && n.input.get(1).is_some_and(|w| index.is_initializer(w))
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
    let clamps = clamps(graph, &index, &activations, &layers);
    Ok(Plan {
        activations,
        layers,
        float_layers,
        clamps,
    })
}

/// The weighted layers at the network's two ends, by name: those that read the
/// image with no weighted layer before them (the stem), and those after which
/// no weighted layer comes (a classifier, a detector's heads). Quantization
/// hurts most there: the first sees the raw pixels' full range, the last writes
/// what is decoded.
pub fn end_layers(graph: &GraphProto) -> Vec<String> {
    let index = Index::new(graph);
    let data = data_tensors(graph, &index);
    let weighted = |n: &NodeProto| {
        WEIGHTED.contains(&n.op_type.as_str())
            && n.input.get(1).is_some_and(|w| index.is_initializer(w))
    };
    // Tensors computed after some weighted layer, in graph (topological) order.
    let mut after_layer: HashSet<&String> = HashSet::new();
    let mut ends = Vec::new();
    for node in &graph.node {
        let behind = node.input.iter().any(|t| after_layer.contains(t));
        if weighted(node) && !behind && data.contains(&node.input[0]) {
            ends.push(layer_name(node));
        }
        if behind || weighted(node) {
            after_layer.extend(&node.output);
        }
    }
    // Tensors from which a weighted layer is reached, from the outputs back.
    let mut before_layer: HashSet<&String> = HashSet::new();
    for node in graph.node.iter().rev() {
        let ahead = node.output.iter().any(|t| before_layer.contains(t));
        if weighted(node) && !ahead {
            let name = layer_name(node);
            if !ends.contains(&name) {
                ends.push(name);
            }
        }
        if ahead || weighted(node) {
            before_layer.extend(&node.input);
        }
    }
    ends
}

/// Tensors that carry image data: computed from a graph input, not from shapes.
fn data_tensors(graph: &GraphProto, index: &Index) -> HashSet<String> {
    let mut data: HashSet<String> = index.graph_inputs().clone();
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
/// in `plan.activations`; `means`, the per-channel means of layer inputs for
/// bias correction (empty: none). Returns the tensors whose clamp was folded
/// into the quantize step: they now hold the layer's unclamped output, and the
/// clamped values are `{tensor}_dequantized`.
pub fn rewrite(
    graph: &mut GraphProto,
    plan: &Plan,
    qparams: &HashMap<String, QParams>,
    means: &HashMap<String, Vec<f32>>,
) -> Result<Vec<String>> {
    let index = Index::new(graph);
    let mut before: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    for &layer in &plan.layers {
        let nodes = quantize_layer(graph, &index, layer, qparams, means)?;
        before.insert(layer, nodes);
    }
    let quantized: HashSet<&String> = plan.activations.iter().collect();
    let folded: Vec<&Clamp> = plan
        .clamps
        .iter()
        .filter(|c| qparams[&c.tensor].stays_within(c.bounds))
        .collect();
    // A folded clamp's output is now written by its layer.
    let mut moved = HashMap::new();
    for clamp in &folded {
        graph.node[clamp.layer].output[0] = clamp.tensor.clone();
        moved.insert(clamp.tensor.as_str(), clamp.layer);
    }
    let removed: HashSet<usize> = folded.iter().map(|c| c.node).collect();
    let mut after: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut at_start = Vec::new();
    for tensor in &plan.activations {
        let q = qparams[tensor];
        graph.initializer.push(tensor::float_tensor(
            &format!("{tensor}_scale"),
            &[],
            &[q.scale],
        ));
        graph.initializer.push(tensor::int8_tensor(
            &format!("{tensor}_zero_point"),
            &[],
            &[q.zero_point],
        ));
        let pair = qdq_pair(tensor);
        match moved
            .get(tensor.as_str())
            .copied()
            .or(index.producer(tensor))
        {
            Some(p) => after.entry(p).or_default().extend(pair),
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
        if !removed.contains(&i) {
            graph.node.push(node);
        }
        graph.node.extend(after.remove(&i).unwrap_or_default());
    }
    onnx::drop_unread_nodes(graph, &[], |n| n.op_type == "Constant");
    onnx::drop_unused_initializers(graph);
    Ok(folded.iter().map(|c| c.tensor.clone()).collect())
}

fn qdq_pair(tensor: &str) -> [NodeProto; 2] {
    let (scale, zero) = (format!("{tensor}_scale"), format!("{tensor}_zero_point"));
    let (q, dq) = (
        format!("{tensor}_quantized"),
        format!("{tensor}_dequantized"),
    );
    [
        onnx::node(
            QUANTIZE,
            &format!("{tensor}_QuantizeLinear"),
            &[tensor, &scale, &zero],
            &[&q],
        ),
        onnx::node(
            DEQUANTIZE,
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
    means: &HashMap<String, Vec<f32>>,
) -> Result<Vec<NodeProto>> {
    let node = &graph.node[layer];
    let name = layer_name(node);
    let Some(input_q) = qparams.get(&node.input[0]) else {
        bail!(
            "{name}: its input {} has no calibrated range",
            node.input[0]
        );
    };
    let weight = index
        .initializer(graph, &node.input[1])
        .with_context(|| format!("{name}: its weights are not a constant"))?;
    let dims = weight.dims.clone();
    // Per output channel: Conv's weights are [out, in, kh, kw]; Gemm's B is
    // [out, in] when transposed, [in, out] otherwise.
    let axis = match node.op_type.as_str() {
        "Gemm" if attr::int(node, "transB") != Some(1) => 1,
        _ => 0,
    };
    let float = tensor::floats(weight)?;
    let (values, scales) = quantize_weights(&float, &dims, axis);
    let groups = attr::int(node, "group").unwrap_or(1).max(1) as usize;
    let shift = means
        .get(&node.input[0])
        .map(|mean| weight_shift(&float, &dims, &values, &scales, axis, groups, mean));
    let channels = scales.len() as i64;
    let w = format!("{name}.weight");
    let weights = (dims.as_slice(), values.as_slice());
    let mut nodes = vec![add_dequantized(
        &mut graph.initializer,
        &w,
        weights,
        &scales,
        axis,
        tensor::int8_tensor,
    )];
    let bias_name = node.input.get(2).filter(|s| !s.is_empty()).cloned();
    let mut bias = match &bias_name {
        Some(bias_name) => {
            let Some(bias) = index.initializer(graph, bias_name) else {
                bail!("{name}: its bias {bias_name} is computed, expected a constant");
            };
            Some(tensor::floats(bias)?)
        }
        None => None,
    };
    if let Some(shift) = shift {
        let bias = bias.get_or_insert_with(|| vec![0.0; shift.len()]);
        for (b, s) in bias.iter_mut().zip(shift) {
            *b -= s;
        }
    }
    if let Some(bias) = bias {
        if bias.len() != scales.len() {
            bail!(
                "{name}: bias has {} values for {channels} output channels",
                bias.len()
            );
        }
        let b = format!("{name}.bias");
        let bias_scales: Vec<f32> = scales.iter().map(|s| s * input_q.scale).collect();
        let q = quantize_bias(&bias, &bias_scales);
        let levels = (&[channels][..], q.as_slice());
        nodes.push(add_dequantized(
            &mut graph.initializer,
            &b,
            levels,
            &bias_scales,
            0,
            tensor::int32_tensor,
        ));
        let inputs = &mut graph.node[layer].input;
        inputs.resize(3, String::new());
        inputs[2] = format!("{b}_dequantized");
    }
    graph.node[layer].input[1] = format!("{w}_dequantized");
    Ok(nodes)
}

/// Adds `{base}_quantized` (`levels` of shape `dims`), its per-channel
/// `{base}_scale` and a zero `{base}_zero_point` of the levels' type to
/// `initializers`; returns the DequantizeLinear along `axis` that reads them.
fn add_dequantized<T: Copy + Default>(
    initializers: &mut Vec<TensorProto>,
    base: &str,
    (dims, levels): (&[i64], &[T]),
    scales: &[f32],
    axis: usize,
    tensor_of: fn(&str, &[i64], &[T]) -> TensorProto,
) -> NodeProto {
    let channels = [scales.len() as i64];
    let zeros = vec![T::default(); scales.len()];
    initializers.extend([
        tensor_of(&format!("{base}_quantized"), dims, levels),
        tensor::float_tensor(&format!("{base}_scale"), &channels, scales),
        tensor_of(&format!("{base}_zero_point"), &channels, &zeros),
    ]);
    dequantize(base, axis)
}

/// The bias-correction shift of one layer (see `weight_error_shift`), in the
/// weights' own layout.
fn weight_shift(
    float: &[f32],
    dims: &[i64],
    values: &[i8],
    scales: &[f32],
    axis: usize,
    groups: usize,
    mean: &[f32],
) -> Vec<f32> {
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let dequantized: Vec<f32> = values
        .iter()
        .enumerate()
        .map(|(i, &q)| q as f32 * scales[(i / inner) % scales.len()])
        .collect();
    if axis == 1 {
        // Gemm's B as [in, out]: transpose to [out, in].
        let (rows, cols) = (dims[0] as usize, dims[1] as usize);
        let t = |v: &[f32]| -> Vec<f32> {
            (0..cols)
                .flat_map(|c| (0..rows).map(move |r| (r, c)))
                .map(|(r, c)| v[r * cols + c])
                .collect()
        };
        let out_in = [dims[1], dims[0]];
        return weight_error_shift(&t(float), &t(&dequantized), &out_in, 1, mean);
    }
    weight_error_shift(float, &dequantized, dims, groups, mean)
}

fn dequantize(base: &str, axis: usize) -> NodeProto {
    let mut node = onnx::node(
        DEQUANTIZE,
        &format!("{base}_DequantizeLinear"),
        &[
            &format!("{base}_quantized"),
            &format!("{base}_scale"),
            &format!("{base}_zero_point"),
        ],
        &[&format!("{base}_dequantized")],
    );
    attr::set(&mut node, attr::int_attr("axis", axis as i64));
    node
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{model, run};
    use edgebone::onnx::tensor::float_tensor;
    use tract_onnx::pb::ModelProto;

    /// x [1,2,1,1] → Conv without bias (2 → 2 channels, 1×1) → y. Channel 0's
    /// second weight (0.1 at scale 0.3/127) does not round exactly.
    fn conv() -> ModelProto {
        model(
            vec![onnx::node("Conv", "conv", &["x", "w"], &["y"])],
            vec![float_tensor("w", &[2, 2, 1, 1], &[0.3, 0.1, -0.7, 0.25])],
        )
    }

    fn quantized(means: &HashMap<String, Vec<f32>>) -> Vec<f32> {
        let mut proto = conv();
        let graph = onnx::graph_mut(&mut proto);
        let plan = plan(graph, &HashSet::new()).unwrap();
        assert_eq!(plan.activations, ["x"]);
        // 1.0 and 2.0 are exact at this scale, so only the weights round.
        let q = QParams {
            scale: 0.01,
            zero_point: -128,
        };
        rewrite(graph, &plan, &HashMap::from([("x".to_string(), q)]), means).unwrap();
        run(&proto, [1, 2, 1, 1], vec![1.0, 2.0])
    }

    /// x [1,2,1,1] → Conv → c → `clamp` → r → Conv → y, with `extra` initializers.
    fn conv_clamp_conv(clamp: NodeProto, extra: Vec<TensorProto>) -> ModelProto {
        let mut init = vec![
            float_tensor("w1", &[2, 2, 1, 1], &[0.3, 0.1, -0.7, 0.25]),
            float_tensor("w2", &[1, 2, 1, 1], &[0.5, -0.5]),
        ];
        init.extend(extra);
        model(
            vec![
                onnx::node("Conv", "conv1", &["x", "w1"], &["c"]),
                clamp,
                onnx::node("Conv", "conv2", &["r", "w2"], &["y"]),
            ],
            init,
        )
    }

    /// Quantizes x and r at scale 0.01 from 0 (range [0, 2.55]); returns the
    /// rewritten model, the folded tensors, and its output on x = [1, 2].
    fn quantize_chain(mut proto: ModelProto, fold: bool) -> (ModelProto, Vec<String>, Vec<f32>) {
        let graph = onnx::graph_mut(&mut proto);
        let mut plan = plan(graph, &HashSet::new()).unwrap();
        assert_eq!(plan.activations, ["x", "r"]);
        if !fold {
            plan.clamps.clear();
        }
        let q = QParams {
            scale: 0.01,
            zero_point: -128,
        };
        let qparams = HashMap::from([("x".to_string(), q), ("r".to_string(), q)]);
        let folded = rewrite(graph, &plan, &qparams, &HashMap::new()).unwrap();
        let y = run(&proto, [1, 2, 1, 1], vec![1.0, 2.0]);
        (proto, folded, y)
    }

    fn ops(proto: &ModelProto) -> Vec<String> {
        let graph = proto.graph.as_ref().unwrap();
        graph.node.iter().map(|n| n.op_type.clone()).collect()
    }

    #[test]
    fn end_layers_are_the_first_and_the_last() {
        let relu = onnx::node("Relu", "relu", &["c"], &["r"]);
        let proto = conv_clamp_conv(relu, vec![]);
        assert_eq!(
            end_layers(proto.graph.as_ref().unwrap()),
            ["conv1", "conv2"]
        );
        // A middle layer is neither.
        let proto = model(
            vec![
                onnx::node("Conv", "a", &["x", "w"], &["y1"]),
                onnx::node("Conv", "b", &["y1", "w"], &["y2"]),
                onnx::node("Relu", "r", &["y2"], &["y3"]),
                onnx::node("Conv", "c", &["y3", "w"], &["y"]),
            ],
            vec![float_tensor("w", &[2, 2, 1, 1], &[0.3, 0.1, -0.7, 0.25])],
        );
        assert_eq!(end_layers(proto.graph.as_ref().unwrap()), ["a", "c"]);
    }

    #[test]
    fn relu_folds_into_the_quantize_step_without_changing_the_output() {
        let relu = || onnx::node("Relu", "relu", &["c"], &["r"]);
        let (folded_model, folded, y) = quantize_chain(conv_clamp_conv(relu(), vec![]), true);
        let (kept_model, _, y_kept) = quantize_chain(conv_clamp_conv(relu(), vec![]), false);
        assert_eq!(folded, ["r"]);
        assert!(!ops(&folded_model).contains(&"Relu".to_string()));
        assert!(ops(&kept_model).contains(&"Relu".to_string()));
        // conv1 writes r itself, straight into its quantize step.
        let graph = folded_model.graph.as_ref().unwrap();
        let conv1 = graph.node.iter().find(|n| n.name == "conv1").unwrap();
        assert_eq!(conv1.output, ["r"]);
        // c = [0.5, -0.2]: the negative channel is clamped by the quantize step.
        assert_eq!(y.len(), 1);
        assert!((y[0] - y_kept[0]).abs() < 1e-6, "{y:?} vs {y_kept:?}");
        assert!((y[0] - 0.25).abs() < 0.01, "{y:?}");
    }

    #[test]
    fn a_clip_tighter_than_the_quantized_range_stays() {
        let clip = onnx::node("Clip", "clip", &["c", "lo", "hi"], &["r"]);
        let bounds = vec![
            float_tensor("lo", &[], &[0.0]),
            float_tensor("hi", &[], &[1.0]),
        ];
        // int8 reaches 2.55 here, beyond the clip's 1.0: folding would change values.
        let (proto, folded, _) = quantize_chain(conv_clamp_conv(clip, bounds), true);
        assert!(folded.is_empty());
        assert!(ops(&proto).contains(&"Clip".to_string()));
    }

    #[test]
    fn bias_correction_cancels_the_mean_weight_error() {
        let float = run(&conv(), [1, 2, 1, 1], vec![1.0, 2.0]);
        let plain = quantized(&HashMap::new());
        // The input equals its calibration mean, so the correction is exact.
        let corrected = quantized(&HashMap::from([("x".to_string(), vec![1.0, 2.0])]));
        eprintln!("float {float:?}, int8 {plain:?}, corrected {corrected:?}");
        assert!((plain[0] - float[0]).abs() > 1e-3, "{plain:?} vs {float:?}");
        for (c, f) in corrected.iter().zip(&float) {
            // Up to the int32 bias step (input scale × weight scale, 2.4e-5 here).
            assert!((c - f).abs() < 3e-5, "{corrected:?} vs {float:?}");
        }
    }
}
