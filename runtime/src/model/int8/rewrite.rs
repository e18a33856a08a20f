//! Finds the quantized patterns of a QDQ model and rewrites each into one integer node.
//!
//! A QDQ file says "this convolution reads int8 data and int8 weights and its
//! result is rounded to int8" with DequantizeLinear before and QuantizeLinear
//! after a float operator. Run as written, that is float arithmetic with extra
//! steps. Here, before tract sees the graph, each
//! `DQ(x) → Conv(DQ(W), bias) [→ Relu | Clip] → Q` becomes one `EdgeboneQConv`
//! reading `x` and writing what `Q` wrote, and likewise for residual additions
//! and max pooling; the float operators that stay (a classifier, pooling, a
//! detector's decoding) keep reading the DequantizeLinear outputs they read before.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

use super::kernels::Requant;
use super::ops::{ADD, CONV, LOOKUP};
use super::pool;
use crate::onnx::qdq::{self, Bounds, DEQUANTIZE as DQ, QParams, QUANTIZE as Q};
use crate::onnx::tensor::{floats, int8_tensor, integers, type_name};
use crate::onnx::{self, Index, attr};

/// What the rewrite made of a model's layers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Nodes now run by integer operators.
    pub integer: Vec<String>,
    /// Quantized-looking nodes left in float, with the reason.
    pub float: Vec<(String, String)>,
}

impl Summary {
    /// Whether the model had anything quantized at all.
    pub fn is_quantized(&self) -> bool {
        !self.integer.is_empty() || !self.float.is_empty()
    }
}

/// Rewrites `model` in place. Only files with QuantizeLinear nodes are touched.
///
/// `keep` names tensors the caller will ask for (feature taps): one that an
/// integer node swallowed comes back as the dequantized int8 tensor that now
/// stands for it.
pub fn rewrite(model: &mut ModelProto, keep: &[&str]) -> Summary {
    let Some(graph) = model.graph.as_mut() else {
        return Summary::default();
    };
    if !graph.node.iter().any(|n| n.op_type == Q) {
        return Summary::default();
    }
    let mut summary = Summary::default();
    let mut replaced: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    let mut removed: HashSet<usize> = HashSet::new();
    let index = Patterns::new(graph);
    for (i, node) in graph.node.iter().enumerate() {
        if !index.reads_quantized(node) {
            continue;
        }
        let attempt = match node.op_type.as_str() {
            "Conv" => conv(&index, i),
            "Add" => add(&index, i),
            "MaxPool" => max_pool(&index, i),
            "Mul" => silu(&index, i),
            "Concat" => concat(&index, i),
            "Gemm" | "MatMul" => Err("fully connected layers run in float".to_string()),
            // Sigmoid's own QDQ is folded into the SiLU table; the rest reads float.
            "Sigmoid" | DQ | Q => continue,
            other => Err(format!("{other} has no int8 operator")),
        };
        match attempt {
            Ok(mut found) => {
                summary.integer.push(node.name.clone());
                found
                    .nodes
                    .extend(tap_dequantizers(&index, node, &found.absorbed, keep));
                removed.extend(found.absorbed);
                replaced.insert(i, found.nodes);
            }
            Err(reason) => summary.float.push((node.name.clone(), reason)),
        }
    }
    let old = std::mem::take(&mut graph.node);
    for (i, node) in old.into_iter().enumerate() {
        if let Some(new) = replaced.remove(&i) {
            graph.node.extend(new);
        } else if !removed.contains(&i) {
            graph.node.push(node);
        }
    }
    // The Q/DQ pairs and SiLU sigmoids of layers that became integer.
    onnx::drop_unread_nodes(graph, keep, |_| true);
    summary
}

/// The graph with its index, read for quantized patterns.
struct Patterns<'g> {
    graph: &'g GraphProto,
    index: Index,
}

impl<'g> Patterns<'g> {
    fn new(graph: &'g GraphProto) -> Self {
        Patterns {
            graph,
            index: Index::new(graph),
        }
    }

    fn node(&self, i: usize) -> &'g NodeProto {
        &self.graph.node[i]
    }

    /// Whether `node` reads a dequantized activation (not a dequantized constant).
    fn reads_quantized(&self, node: &NodeProto) -> bool {
        node.input.iter().any(|t| {
            self.producer_of(t, DQ)
                .is_some_and(|dq| !self.index.is_initializer(&self.node(dq).input[0]))
        })
    }

    fn producer_of(&self, tensor: &str, op_type: &str) -> Option<usize> {
        let p = self.index.producer(tensor)?;
        (self.node(p).op_type == op_type).then_some(p)
    }

    fn constant(&self, node: &NodeProto, slot: usize) -> Result<&'g TensorProto, String> {
        let name = node.input.get(slot).filter(|s| !s.is_empty());
        name.and_then(|n| self.index.initializer(self.graph, n))
            .ok_or_else(|| format!("{} input {slot} is not an initializer", node.name))
    }

    /// `DQ(x, scale, zero)` of an int8 activation (not a constant).
    fn activation(&self, tensor: &str) -> Result<(String, QParams), String> {
        let dq = self
            .producer_of(tensor, DQ)
            .ok_or_else(|| format!("input {tensor} is not dequantized int8"))?;
        let node = self.node(dq);
        if self.index.is_initializer(&node.input[0]) {
            return Err(format!("input {tensor} is a constant"));
        }
        Ok((node.input[0].clone(), self.quant(node)?))
    }

    /// Scale and zero point of a Q or DQ node on int8 activations.
    fn quant(&self, node: &NodeProto) -> Result<QParams, String> {
        let scale = floats(self.constant(node, 1)?)?;
        let zero = self.constant(node, 2).map_err(|_| {
            format!(
                "{}: no zero point (uint8 by default, int8 expected)",
                node.name
            )
        })?;
        if zero.data_type != DataType::Int8 as i32 {
            return Err(format!(
                "{}: {} activations, the integer path takes int8",
                node.name,
                type_name(zero.data_type)
            ));
        }
        match (scale.as_slice(), integers(zero)?.as_slice()) {
            ([s], [z]) => Ok(QParams {
                scale: *s,
                zero_point: *z as i8,
            }),
            _ => Err(format!(
                "{}: per-tensor activation quantization expected",
                node.name
            )),
        }
    }

    /// The `[Relu | Clip] → Q` after `tensor`: output name, quantization, real bounds.
    fn quantized_output(
        &self,
        tensor: &str,
    ) -> Result<(Vec<usize>, String, QParams, Bounds), String> {
        let next = self
            .index
            .only_consumer(tensor)
            .ok_or_else(|| format!("{tensor} is read by several nodes or is an output"))?;
        let clamp = self.node(next);
        let (absorbed, bounds, q) = match qdq::clamp_bounds(self.graph, &self.index, clamp)? {
            None if clamp.op_type == Q => (vec![next], Bounds::NONE, next),
            Some(bounds) => {
                let q = self
                    .index
                    .only_consumer(&clamp.output[0])
                    .filter(|&q| self.node(q).op_type == Q)
                    .ok_or_else(|| format!("{} is not quantized", clamp.name))?;
                (vec![next, q], bounds, q)
            }
            None => {
                let other = &clamp.op_type;
                return Err(format!("{tensor} goes to {other}, not to QuantizeLinear"));
            }
        };
        let node = self.node(q);
        Ok((absorbed, node.output[0].clone(), self.quant(node)?, bounds))
    }
}

/// The requantization to `y` of a result clamped to `bounds`.
fn requant(y: QParams, bounds: Bounds) -> Requant {
    Requant {
        zero: y.zero_point as i32,
        min: y.quantize(f64::from(bounds.lo)),
        max: y.quantize(f64::from(bounds.hi)),
    }
}

/// Replacement nodes for one pattern, and the pattern's other nodes to drop.
struct Found {
    nodes: Vec<NodeProto>,
    absorbed: Vec<usize>,
}

fn conv(index: &Patterns, i: usize) -> Result<Found, String> {
    let node = index.node(i);
    let (input, x) = index.activation(&node.input[0])?;
    let (weights, w_scales) = conv_weights(index, node)?;
    // A convolution whose result is not quantized (a detector's head) keeps its
    // int8 product and gives its float result to whatever reads it.
    let (absorbed, output, y, bounds, float_out) = match index.quantized_output(&node.output[0]) {
        Ok((absorbed, output, y, bounds)) => (absorbed, output, y, bounds, false),
        Err(_) => (
            vec![],
            node.output[0].clone(),
            QParams::UNIT,
            Bounds::NONE,
            true,
        ),
    };
    let c_out = weights.dims[0] as usize;
    let w_scale = |c: usize| at(&w_scales, c);
    let bias = conv_bias(index, node, c_out)?;
    let (x_scale, y_scale) = (f64::from(x.scale), f64::from(y.scale));
    let bias_acc: Vec<i64> = (0..c_out)
        .map(|c| (bias[c] / (x_scale * w_scale(c))).round_ties_even() as i64)
        .collect();
    let scales: Vec<f32> = (0..c_out)
        .map(|c| (x_scale * w_scale(c) / y_scale) as f32)
        .collect();
    let ints = |name: &str, default: &[i64]| attr::ints(node, name).unwrap_or(default).to_vec();
    if ints("dilations", &[1, 1]).iter().any(|&d| d != 1) {
        return Err(format!("{}: dilated convolution", node.name));
    }
    if attr::string(node, "auto_pad").is_some_and(|s| !s.is_empty() && s != b"NOTSET") {
        return Err(format!("{}: auto_pad is not covered", node.name));
    }
    let mut attributes = vec![
        attr::tensor("weights", weights),
        attr::ints_attr("bias", bias_acc),
        attr::floats_attr("scales", scales),
        attr::ints_attr("strides", ints("strides", &[1, 1])),
        attr::ints_attr("pads", ints("pads", &[0, 0, 0, 0])),
        attr::int_attr("group", attr::int(node, "group").unwrap_or(1)),
        attr::int_attr("zero_in", x.zero_point as i64),
        attr::int_attr("float_out", float_out as i64),
    ];
    attributes.extend(requant_attrs(requant(y, bounds)));
    Ok(Found {
        nodes: vec![integer_node(CONV, node, &[&input], &output, attributes)],
        absorbed,
    })
}

/// The int8 weights behind `DQ(W)`, symmetric, per tensor or per output channel.
fn conv_weights(index: &Patterns, node: &NodeProto) -> Result<(TensorProto, Vec<f64>), String> {
    let dq = index
        .producer_of(&node.input[1], DQ)
        .ok_or_else(|| format!("{}: weights are not dequantized int8", node.name))?;
    let dq = index.node(dq);
    let weights = index.constant(dq, 0)?;
    if weights.data_type != DataType::Int8 as i32 || weights.dims.len() != 4 {
        return Err(format!(
            "{}: {} weights of rank {}, the integer path takes 2-D int8 convolutions",
            node.name,
            type_name(weights.data_type),
            weights.dims.len()
        ));
    }
    if let Ok(zero) = index.constant(dq, 2)
        && integers(zero)?.iter().any(|&z| z != 0)
    {
        return Err(format!(
            "{}: asymmetric weights (zero point ≠ 0), the integer path takes symmetric ones",
            node.name
        ));
    }
    let scales: Vec<f64> = floats(index.constant(dq, 1)?)?
        .iter()
        .map(|&s| s as f64)
        .collect();
    let axis = attr::int(dq, "axis").unwrap_or(1);
    if scales.len() != 1 && (axis != 0 || scales.len() != weights.dims[0] as usize) {
        return Err(format!(
            "{}: weight scales must be per tensor or per output channel",
            node.name
        ));
    }
    let values: Vec<i8> = integers(weights)?.iter().map(|&v| v as i8).collect();
    Ok((int8_tensor("", &weights.dims, &values), scales))
}

/// The real-valued bias, from `DQ(int32)` or a float constant; 0 when absent.
fn conv_bias(index: &Patterns, node: &NodeProto, c_out: usize) -> Result<Vec<f64>, String> {
    let Some(name) = node.input.get(2).filter(|s| !s.is_empty()) else {
        return Ok(vec![0.0; c_out]);
    };
    if let Some(dq) = index.producer_of(name, DQ) {
        let dq = index.node(dq);
        let q = integers(index.constant(dq, 0)?)?;
        let scales = floats(index.constant(dq, 1)?)?;
        let zero = index.constant(dq, 2).map(integers).unwrap_or(Ok(vec![0]))?;
        // The loader's validation refuses these; checked here too because a
        // short bias was read past its end.
        let fits = |n: usize| n == 1 || n == c_out;
        if q.len() != c_out || !fits(scales.len()) || !fits(zero.len()) {
            return Err(format!(
                "{}: {} bias values for {c_out} channels",
                node.name,
                q.len()
            ));
        }
        return Ok((0..c_out)
            .map(|c| (q[c] - at(&zero, c)) as f64 * at(&scales, c) as f64)
            .collect());
    }
    let values = floats(index.constant(node, 2)?)?;
    if values.len() != c_out {
        return Err(format!(
            "{}: {} bias values for {c_out} channels",
            node.name,
            values.len()
        ));
    }
    Ok(values.iter().map(|&v| v as f64).collect())
}

fn add(index: &Patterns, i: usize) -> Result<Found, String> {
    let node = index.node(i);
    let (a, qa) = index.activation(&node.input[0])?;
    let (b, qb) = index.activation(&node.input[1])?;
    let (absorbed, output, y, bounds) = index.quantized_output(&node.output[0])?;
    let ratio = |q: QParams| (f64::from(q.scale) / f64::from(y.scale)) as f32;
    let mut attributes = vec![
        attr::int_attr("zero_a", qa.zero_point as i64),
        attr::int_attr("zero_b", qb.zero_point as i64),
        attr::float_attr("ratio_a", ratio(qa)),
        attr::float_attr("ratio_b", ratio(qb)),
    ];
    attributes.extend(requant_attrs(requant(y, bounds)));
    Ok(Found {
        nodes: vec![integer_node(ADD, node, &[&a, &b], &output, attributes)],
        absorbed,
    })
}

/// `DQ → MaxPool → Q`: the maximum commutes with (de)quantization, so the pool
/// runs on int8 and a table maps the input's scale to the output's.
fn max_pool(index: &Patterns, i: usize) -> Result<Found, String> {
    let node = index.node(i);
    if node.output.len() != 1 {
        return Err(format!("{}: MaxPool indices are not covered", node.name));
    }
    let (input, x) = index.activation(&node.input[0])?;
    let (absorbed, output, y, bounds) = index.quantized_output(&node.output[0])?;
    let pooled = format!("{}.int8", node.output[0]);
    // edgebone's pool where it covers the attributes, else tract's, on int8 either way.
    let op_type = if pool::covers(node) {
        pool::POOL.to_string()
    } else {
        node.op_type.clone()
    };
    let pool = NodeProto {
        input: vec![input],
        output: vec![pooled.clone()],
        op_type,
        ..node.clone()
    };
    let lookup = lookup_node(
        format!("{}.requantize", node.name),
        pooled,
        output,
        table(x, y, requant(y, bounds), |v| v),
    );
    Ok(Found {
        nodes: vec![pool, lookup],
        absorbed,
    })
}

/// DequantizeLinear nodes re-creating the float tensors of `node` and its
/// absorbed activation that the caller keeps, from the int8 tensor now written.
fn tap_dequantizers(
    index: &Patterns,
    node: &NodeProto,
    absorbed: &[usize],
    keep: &[&str],
) -> Vec<NodeProto> {
    let Some(q) = absorbed
        .iter()
        .map(|&a| index.node(a))
        .find(|n| n.op_type == Q)
    else {
        return vec![];
    };
    let swallowed = absorbed
        .iter()
        .map(|&a| index.node(a))
        .filter(|n| n.op_type != Q)
        .chain([node])
        .flat_map(|n| n.output.iter());
    swallowed
        .filter(|t| keep.contains(&t.as_str()))
        .map(|t| {
            let input = [&q.output[0], &q.input[1], &q.input[2]].map(String::as_str);
            onnx::node(DQ, &format!("{t}.tap"), &input, &[t])
        })
        .collect()
}

/// A table from every int8 input to its int8 output through `f` (real in, real out).
fn table(x: QParams, y: QParams, requant: Requant, f: impl Fn(f64) -> f64) -> TensorProto {
    let levels: Vec<i8> = (0..=255u8)
        .map(|bits| {
            let real = x.dequantize(bits as i8 as i32);
            y.quantize(f(real)).clamp(requant.min, requant.max) as i8
        })
        .collect();
    int8_tensor("", &[256], &levels)
}

fn lookup_node(name: String, input: String, output: String, table: TensorProto) -> NodeProto {
    let mut lookup = onnx::node(LOOKUP, &name, &[&input], &[&output]);
    lookup.attribute.push(attr::tensor("table", table));
    lookup
}

/// An integer operator standing for `node`, named after it.
fn integer_node(
    op: &str,
    node: &NodeProto,
    inputs: &[&str],
    output: &str,
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        attribute: attributes,
        ..onnx::node(op, &node.name, inputs, &[output])
    }
}

/// SiLU as YOLOv5 exports it, `x · Q(sigmoid(x))` between QDQ pairs: a function
/// of one int8 value, so one table reproduces the whole chain, quantized
/// sigmoid included.
fn silu(index: &Patterns, i: usize) -> Result<Found, String> {
    let node = index.node(i);
    let not_silu = || {
        format!(
            "{}: a product of two activations that is not SiLU",
            node.name
        )
    };
    let [a, b] = node.input.as_slice() else {
        return Err(not_silu());
    };
    let sigmoid_of = |t: &str| -> Option<(String, QParams)> {
        let dq = index.node(index.producer_of(t, DQ)?);
        let q = index.node(index.producer_of(&dq.input[0], Q)?);
        let sigmoid = index.node(index.producer_of(&q.input[0], "Sigmoid")?);
        Some((sigmoid.input[0].clone(), index.quant(q).ok()?))
    };
    let (x, sig) = match (sigmoid_of(b), sigmoid_of(a)) {
        (Some((input, q)), _) if input == *a => (a, q),
        (_, Some((input, q))) if input == *b => (b, q),
        _ => return Err(not_silu()),
    };
    let (input, qx) = index.activation(x)?;
    let (absorbed, output, y, bounds) = index.quantized_output(&node.output[0])?;
    let f = |v: f64| v * sig.dequantize(sig.quantize(1.0 / (1.0 + (-v).exp())));
    Ok(Found {
        nodes: vec![lookup_node(
            node.name.clone(),
            input,
            output,
            table(qx, y, requant(y, bounds), f),
        )],
        absorbed,
    })
}

/// `Concat(DQ(a), DQ(b), …) → Q`: inputs whose quantization differs from the
/// output's are requantized by table, then the int8 tensors are concatenated.
fn concat(index: &Patterns, i: usize) -> Result<Found, String> {
    let node = index.node(i);
    let inputs = node
        .input
        .iter()
        .map(|t| index.activation(t))
        .collect::<Result<Vec<_>, _>>()?;
    let (absorbed, output, y, bounds) = index.quantized_output(&node.output[0])?;
    let requant = requant(y, bounds);
    let mut nodes = Vec::new();
    let mut tensors = Vec::new();
    for (k, (tensor, q)) in inputs.into_iter().enumerate() {
        if q == y && requant.min == -128 && requant.max == 127 {
            tensors.push(tensor);
            continue;
        }
        let requantized = format!("{}.input{k}.int8", node.name);
        let name = format!("{}.requantize{k}", node.name);
        nodes.push(lookup_node(
            name,
            tensor,
            requantized.clone(),
            table(q, y, requant, |v| v),
        ));
        tensors.push(requantized);
    }
    nodes.push(NodeProto {
        input: tensors,
        output: vec![output],
        ..node.clone()
    });
    Ok(Found { nodes, absorbed })
}

/// Element `c` of a per-channel vector, or its one value.
fn at<T: Copy>(values: &[T], c: usize) -> T {
    if values.len() == 1 {
        values[0]
    } else {
        values[c]
    }
}

fn requant_attrs(r: Requant) -> Vec<AttributeProto> {
    vec![
        attr::int_attr("zero_out", r.zero as i64),
        attr::int_attr("min", r.min as i64),
        attr::int_attr("max", r.max as i64),
    ]
}
