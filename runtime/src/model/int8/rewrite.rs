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

const DQ: &str = "DequantizeLinear";
const Q: &str = "QuantizeLinear";

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
    let index = Index::new(graph);
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
    drop_dead_nodes(graph, keep);
    summary
}

/// Looks up producers, consumers and constants by tensor name.
struct Index<'g> {
    graph: &'g GraphProto,
    producer: HashMap<&'g str, usize>,
    consumers: HashMap<&'g str, Vec<usize>>,
    constants: HashMap<&'g str, &'g TensorProto>,
    outputs: HashSet<&'g str>,
}

impl<'g> Index<'g> {
    fn new(graph: &'g GraphProto) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for out in &node.output {
                producer.insert(out.as_str(), i);
            }
            for input in node.input.iter().filter(|s| !s.is_empty()) {
                consumers.entry(input.as_str()).or_default().push(i);
            }
        }
        Index {
            graph,
            producer,
            consumers,
            constants: graph
                .initializer
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect(),
            outputs: graph.output.iter().map(|v| v.name.as_str()).collect(),
        }
    }

    fn node(&self, i: usize) -> &'g NodeProto {
        &self.graph.node[i]
    }

    /// The node that alone reads `tensor`, which is not a graph output.
    fn only_consumer(&self, tensor: &str) -> Option<usize> {
        match self.consumers.get(tensor).map(Vec::as_slice) {
            Some([one]) if !self.outputs.contains(tensor) => Some(*one),
            _ => None,
        }
    }

    /// Whether `node` reads a dequantized activation (not a dequantized constant).
    fn reads_quantized(&self, node: &NodeProto) -> bool {
        node.input.iter().any(|t| {
            self.producer_of(t, DQ)
                .is_some_and(|dq| !self.constants.contains_key(self.node(dq).input[0].as_str()))
        })
    }

    fn producer_of(&self, tensor: &str, op_type: &str) -> Option<usize> {
        let p = *self.producer.get(tensor)?;
        (self.node(p).op_type == op_type).then_some(p)
    }

    fn constant(&self, node: &NodeProto, slot: usize) -> Result<&'g TensorProto, String> {
        let name = node.input.get(slot).filter(|s| !s.is_empty());
        name.and_then(|n| self.constants.get(n.as_str()).copied())
            .ok_or_else(|| format!("{} input {slot} is not an initializer", node.name))
    }

    /// `DQ(x, scale, zero)` of an int8 activation (not a constant).
    fn activation(&self, tensor: &str) -> Result<(String, Quant), String> {
        let dq = self
            .producer_of(tensor, DQ)
            .ok_or_else(|| format!("input {tensor} is not dequantized int8"))?;
        let node = self.node(dq);
        if self.constants.contains_key(node.input[0].as_str()) {
            return Err(format!("input {tensor} is a constant"));
        }
        Ok((node.input[0].clone(), self.quant(node)?))
    }

    /// Scale and zero point of a Q or DQ node on int8 activations.
    fn quant(&self, node: &NodeProto) -> Result<Quant, String> {
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
            ([s], [z]) => Ok(Quant {
                scale: *s as f64,
                zero: *z as i32,
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
    ) -> Result<(Vec<usize>, String, Quant, Bounds), String> {
        let next = self
            .only_consumer(tensor)
            .ok_or_else(|| format!("{tensor} is read by several nodes or is an output"))?;
        let (absorbed, bounds, q) = match self.node(next).op_type.as_str() {
            Q => (vec![next], Bounds::NONE, next),
            "Relu" | "Clip" => {
                let bounds = self.clamp_bounds(self.node(next))?;
                let q = self
                    .only_consumer(&self.node(next).output[0])
                    .filter(|&q| self.node(q).op_type == Q)
                    .ok_or_else(|| format!("{} is not quantized", self.node(next).name))?;
                (vec![next, q], bounds, q)
            }
            other => return Err(format!("{tensor} goes to {other}, not to QuantizeLinear")),
        };
        let node = self.node(q);
        Ok((absorbed, node.output[0].clone(), self.quant(node)?, bounds))
    }

    fn clamp_bounds(&self, node: &NodeProto) -> Result<Bounds, String> {
        if node.op_type == "Relu" {
            return Ok(Bounds {
                lo: 0.0,
                hi: f64::INFINITY,
            });
        }
        let bound = |slot: usize, attr: &str, default: f64| -> Result<f64, String> {
            if node.input.get(slot).is_some_and(|s| !s.is_empty()) {
                Ok(floats(self.constant(node, slot)?)?[0] as f64)
            } else {
                Ok(node
                    .attribute
                    .iter()
                    .find(|a| a.name == attr)
                    .map_or(default, |a| a.f as f64))
            }
        };
        Ok(Bounds {
            lo: bound(1, "min", f64::NEG_INFINITY)?,
            hi: bound(2, "max", f64::INFINITY)?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Quant {
    scale: f64,
    zero: i32,
}

impl Quant {
    /// Not quantized: real values, unit scale.
    const REAL: Quant = Quant {
        scale: 1.0,
        zero: 0,
    };

    /// ONNX QuantizeLinear: round half to even, saturate to int8.
    fn quantize(&self, real: f64) -> i32 {
        if real.is_infinite() {
            return if real > 0.0 { 127 } else { -128 };
        }
        ((real / self.scale).round_ties_even() as i64 + self.zero as i64).clamp(-128, 127) as i32
    }

    fn requant(&self, bounds: Bounds) -> Requant {
        Requant {
            zero: self.zero,
            min: self.quantize(bounds.lo),
            max: self.quantize(bounds.hi),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Bounds {
    lo: f64,
    hi: f64,
}

impl Bounds {
    const NONE: Bounds = Bounds {
        lo: f64::NEG_INFINITY,
        hi: f64::INFINITY,
    };
}

/// Replacement nodes for one pattern, and the pattern's other nodes to drop.
struct Found {
    nodes: Vec<NodeProto>,
    absorbed: Vec<usize>,
}

fn conv(index: &Index, i: usize) -> Result<Found, String> {
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
            Quant::REAL,
            Bounds::NONE,
            true,
        ),
    };
    let c_out = weights.dims[0] as usize;
    let w_scale = |c: usize| at(&w_scales, c);
    let bias = conv_bias(index, node, c_out)?;
    let bias_acc: Vec<i64> = (0..c_out)
        .map(|c| (bias[c] / (x.scale * w_scale(c))).round_ties_even() as i64)
        .collect();
    let scales: Vec<f32> = (0..c_out)
        .map(|c| (x.scale * w_scale(c) / y.scale) as f32)
        .collect();
    let ints_attr =
        |name: &str, default: Vec<i64>| get_attr(node, name).map_or(default, |a| a.ints.clone());
    if ints_attr("dilations", vec![1, 1]).iter().any(|&d| d != 1) {
        return Err(format!("{}: dilated convolution", node.name));
    }
    if get_attr(node, "auto_pad").is_some_and(|a| !a.s.is_empty() && a.s != b"NOTSET") {
        return Err(format!("{}: auto_pad is not covered", node.name));
    }
    let requant = y.requant(bounds);
    let mut attributes = vec![
        tensor_attr("weights", weights),
        ints_attr_proto("bias", bias_acc),
        floats_attr("scales", scales),
        ints_attr_proto("strides", ints_attr("strides", vec![1, 1])),
        ints_attr_proto("pads", ints_attr("pads", vec![0, 0, 0, 0])),
        int_attr("group", get_attr(node, "group").map_or(1, |a| a.i)),
        int_attr("zero_in", x.zero as i64),
        int_attr("float_out", float_out as i64),
    ];
    attributes.extend(requant_attrs(requant));
    Ok(Found {
        nodes: vec![NodeProto {
            name: node.name.clone(),
            op_type: CONV.into(),
            input: vec![input],
            output: vec![output],
            attribute: attributes,
            ..Default::default()
        }],
        absorbed,
    })
}

/// The int8 weights behind `DQ(W)`, symmetric, per tensor or per output channel.
fn conv_weights(index: &Index, node: &NodeProto) -> Result<(TensorProto, Vec<f64>), String> {
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
    let axis = get_attr(dq, "axis").map_or(1, |a| a.i);
    if scales.len() != 1 && (axis != 0 || scales.len() != weights.dims[0] as usize) {
        return Err(format!(
            "{}: weight scales must be per tensor or per output channel",
            node.name
        ));
    }
    let values = integers(weights)?;
    let as_int8 = TensorProto {
        dims: weights.dims.clone(),
        data_type: DataType::Int8 as i32,
        raw_data: values.iter().map(|&v| v as i8 as u8).collect(),
        ..Default::default()
    };
    Ok((as_int8, scales))
}

/// The real-valued bias, from `DQ(int32)` or a float constant; 0 when absent.
fn conv_bias(index: &Index, node: &NodeProto, c_out: usize) -> Result<Vec<f64>, String> {
    let Some(name) = node.input.get(2).filter(|s| !s.is_empty()) else {
        return Ok(vec![0.0; c_out]);
    };
    if let Some(dq) = index.producer_of(name, DQ) {
        let dq = index.node(dq);
        let q = integers(index.constant(dq, 0)?)?;
        let scales = floats(index.constant(dq, 1)?)?;
        let zero = index.constant(dq, 2).map(integers).unwrap_or(Ok(vec![0]))?;
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

fn add(index: &Index, i: usize) -> Result<Found, String> {
    let node = index.node(i);
    let (a, qa) = index.activation(&node.input[0])?;
    let (b, qb) = index.activation(&node.input[1])?;
    let (absorbed, output, y, bounds) = index.quantized_output(&node.output[0])?;
    let mut attributes = vec![
        int_attr("zero_a", qa.zero as i64),
        int_attr("zero_b", qb.zero as i64),
        float_attr("ratio_a", (qa.scale / y.scale) as f32),
        float_attr("ratio_b", (qb.scale / y.scale) as f32),
    ];
    attributes.extend(requant_attrs(y.requant(bounds)));
    Ok(Found {
        nodes: vec![NodeProto {
            name: node.name.clone(),
            op_type: ADD.into(),
            input: vec![a, b],
            output: vec![output],
            attribute: attributes,
            ..Default::default()
        }],
        absorbed,
    })
}

/// `DQ → MaxPool → Q`: the maximum commutes with (de)quantization, so the pool
/// runs on int8 and a table maps the input's scale to the output's.
fn max_pool(index: &Index, i: usize) -> Result<Found, String> {
    let node = index.node(i);
    if node.output.len() != 1 {
        return Err(format!("{}: MaxPool indices are not covered", node.name));
    }
    let (input, x) = index.activation(&node.input[0])?;
    let (absorbed, output, y, bounds) = index.quantized_output(&node.output[0])?;
    let pooled = format!("{}.int8", node.output[0]);
    let pool = NodeProto {
        input: vec![input],
        output: vec![pooled.clone()],
        ..node.clone()
    };
    let requant = y.requant(bounds);
    let lookup = lookup_node(
        format!("{}.requantize", node.name),
        pooled,
        output,
        table(x, y, requant, |v| v),
    );
    Ok(Found {
        nodes: vec![pool, lookup],
        absorbed,
    })
}

/// DequantizeLinear nodes re-creating the float tensors of `node` and its
/// absorbed activation that the caller keeps, from the int8 tensor now written.
fn tap_dequantizers(
    index: &Index,
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
        .map(|t| NodeProto {
            name: format!("{t}.tap"),
            op_type: DQ.into(),
            input: vec![q.output[0].clone(), q.input[1].clone(), q.input[2].clone()],
            output: vec![t.clone()],
            ..Default::default()
        })
        .collect()
}

/// A table from every int8 input to its int8 output through `f` (real in, real out).
fn table(x: Quant, y: Quant, requant: Requant, f: impl Fn(f64) -> f64) -> TensorProto {
    let raw_data = (0..=255u8)
        .map(|bits| {
            let real = (bits as i8 as i32 - x.zero) as f64 * x.scale;
            y.quantize(f(real)).clamp(requant.min, requant.max) as i8 as u8
        })
        .collect();
    TensorProto {
        dims: vec![256],
        data_type: DataType::Int8 as i32,
        raw_data,
        ..Default::default()
    }
}

fn lookup_node(name: String, input: String, output: String, table: TensorProto) -> NodeProto {
    NodeProto {
        name,
        op_type: LOOKUP.into(),
        input: vec![input],
        output: vec![output],
        attribute: vec![tensor_attr("table", table)],
        ..Default::default()
    }
}

/// SiLU as YOLOv5 exports it, `x · Q(sigmoid(x))` between QDQ pairs: a function
/// of one int8 value, so one table reproduces the whole chain, quantized
/// sigmoid included.
fn silu(index: &Index, i: usize) -> Result<Found, String> {
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
    let sigmoid_of = |t: &str| -> Option<(String, Quant)> {
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
    let requant = y.requant(bounds);
    let f = |v: f64| {
        let s = sig.quantize(1.0 / (1.0 + (-v).exp()));
        v * ((s - sig.zero) as f64 * sig.scale)
    };
    Ok(Found {
        nodes: vec![lookup_node(
            node.name.clone(),
            input,
            output,
            table(qx, y, requant, f),
        )],
        absorbed,
    })
}

/// `Concat(DQ(a), DQ(b), …) → Q`: inputs whose quantization differs from the
/// output's are requantized by table, then the int8 tensors are concatenated.
fn concat(index: &Index, i: usize) -> Result<Found, String> {
    let node = index.node(i);
    let inputs = node
        .input
        .iter()
        .map(|t| index.activation(t))
        .collect::<Result<Vec<_>, _>>()?;
    let (absorbed, output, y, bounds) = index.quantized_output(&node.output[0])?;
    let requant = y.requant(bounds);
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

/// Nodes whose outputs nothing reads any more (the Q/DQ pairs and SiLU
/// sigmoids of layers that became integer). ONNX nodes have no side effects.
fn drop_dead_nodes(graph: &mut GraphProto, keep: &[&str]) {
    loop {
        let read: HashSet<String> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .chain(graph.output.iter().map(|o| o.name.clone()))
            .chain(keep.iter().map(|k| k.to_string()))
            .collect();
        let before = graph.node.len();
        graph
            .node
            .retain(|n| n.output.iter().any(|o| read.contains(o)));
        if graph.node.len() == before {
            return;
        }
    }
}

/// Element `c` of a per-channel vector, or its one value.
fn at<T: Copy>(values: &[T], c: usize) -> T {
    if values.len() == 1 {
        values[0]
    } else {
        values[c]
    }
}

fn get_attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn type_name(data_type: i32) -> &'static str {
    DataType::try_from(data_type).map_or("unknown", |t| t.as_str_name())
}

fn floats(t: &TensorProto) -> Result<Vec<f32>, String> {
    if t.data_type != DataType::Float as i32 {
        return Err(format!(
            "{}: float expected, got {}",
            t.name,
            type_name(t.data_type)
        ));
    }
    if t.raw_data.is_empty() {
        return Ok(t.float_data.clone());
    }
    Ok(t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// int8, uint8 and int32 constants, widened.
fn integers(t: &TensorProto) -> Result<Vec<i64>, String> {
    let raw = &t.raw_data;
    let values = match DataType::try_from(t.data_type) {
        Ok(DataType::Int8) if !raw.is_empty() => raw.iter().map(|&b| b as i8 as i64).collect(),
        Ok(DataType::Uint8) if !raw.is_empty() => raw.iter().map(|&b| b as i64).collect(),
        Ok(DataType::Int32) if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
            .collect(),
        Ok(DataType::Int8 | DataType::Uint8 | DataType::Int32) => {
            t.int32_data.iter().map(|&v| v as i64).collect()
        }
        _ => {
            return Err(format!(
                "{}: integer expected, got {}",
                t.name,
                type_name(t.data_type)
            ));
        }
    };
    Ok(values)
}

fn requant_attrs(r: Requant) -> Vec<AttributeProto> {
    vec![
        int_attr("zero_out", r.zero as i64),
        int_attr("min", r.min as i64),
        int_attr("max", r.max as i64),
    ]
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        ..Default::default()
    }
}

fn float_attr(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        ..Default::default()
    }
}

fn ints_attr_proto(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints,
        ..Default::default()
    }
}

fn floats_attr(name: &str, floats: Vec<f32>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        floats,
        ..Default::default()
    }
}

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        t: Some(t),
        ..Default::default()
    }
}
