//! What a network must satisfy before the rewrites and tract read it.
//!
//! The int8 rewrite, the integer kernels, the Winograd rewrite and tract index
//! and divide by attributes and constants they take on trust: a `strides` of one
//! value or `pads` of two made them index out of bounds, a bias shorter than the
//! output channels read past its end, a scale of 0, negative, NaN or infinite
//! ran and gave garbage. Everything here is a rule of ONNX itself (or of the 2-D
//! images edgebone runs), checked once on the file as loaded, so each failure is
//! one error naming the node.
//!
//! The rule between an error and the int8 path's float fallback: a parameter
//! that ONNX forbids (a scale that is not positive and finite, a zero point
//! outside its type or of a type QDQ does not have, counts that disagree,
//! attribute lists of the wrong length) is an error here, whichever path would
//! run it. A well-formed pattern the integer operators do not cover (uint8
//! activations, asymmetric weights, dilation, per-channel activations) is not an
//! error: it runs in float, and the rewrite logs why.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};
use tract_onnx::tract_hir::internal::*;

use crate::onnx::qdq::{DEQUANTIZE, QUANTIZE};
use crate::onnx::tensor::{floats, integers, type_name};
use crate::onnx::{Index, attr};

/// Checks every node the rewrites or the decoders read; the error names the
/// first node at fault and what is wrong with it.
pub fn graph(graph: &GraphProto) -> Result<(), String> {
    let index = Index::new(graph);
    for (i, node) in graph.node.iter().enumerate() {
        let checked = arity(node).and_then(|()| match node.op_type.as_str() {
            "Conv" => conv(graph, &index, node),
            QUANTIZE | DEQUANTIZE => qdq(graph, &index, node),
            _ => Ok(()),
        });
        checked.map_err(|what| format!("node {}: {what}", name(node, i)))?;
    }
    outputs_exist(graph)
}

/// Every graph output is a tensor the graph has: tract looks each one up by
/// name and panicked on one it did not know (found by the `onnx_bytes` fuzz
/// target). Known are what tract's parser knows: the graph's inputs and
/// initializers, and every named node input and output.
fn outputs_exist(graph: &GraphProto) -> Result<(), String> {
    let known: std::collections::HashSet<&str> = graph
        .input
        .iter()
        .map(|v| v.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .chain(
            graph
                .node
                .iter()
                .flat_map(|n| n.input.iter().chain(&n.output))
                .map(String::as_str),
        )
        .filter(|n| !n.is_empty())
        .collect();
    match graph
        .output
        .iter()
        .find(|o| !known.contains(o.name.as_str()))
    {
        Some(o) => Err(format!(
            "graph output {:?} is not made by any node, initializer or input",
            o.name
        )),
        None => Ok(()),
    }
}

/// A node's name, or its position and type when the file leaves it unnamed.
fn name(node: &NodeProto, i: usize) -> String {
    if node.name.is_empty() {
        format!("#{i} ({})", node.op_type)
    } else {
        node.name.clone()
    }
}

/// Inputs (required ones non-empty) and outputs of the operators the rewrites
/// read by position.
fn arity(node: &NodeProto) -> Result<(), String> {
    let (required, most) = match node.op_type.as_str() {
        "Conv" => (2, 3),
        QUANTIZE | DEQUANTIZE => (2, 3),
        "Add" | "Mul" => (2, 2),
        "MaxPool" | "Sigmoid" | "Relu" => (1, 1),
        "Clip" => (1, 3),
        "Concat" => (1, usize::MAX),
        // Every other operator but a constant (and Loop, whose trip count may be
        // omitted) reads its data from input 0: tract's shape rules index it
        // without a check (a Resize left with no inputs panicked there, found
        // by the `bundle` fuzz target).
        "Constant" | "Loop" => return outputs(node),
        _ => (1, usize::MAX),
    };
    let n = node.input.len();
    if n < required || n > most || node.input[..required].iter().any(String::is_empty) {
        let expected = match most {
            usize::MAX => format!("at least {required}"),
            m if m == required => format!("{required}"),
            m => format!("{required} to {m}"),
        };
        return Err(format!(
            "{} has {n} input(s) {:?}, {expected} expected",
            node.op_type, node.input
        ));
    }
    // tract-onnx gives these an optional input by the count of names but wires
    // only the non-empty ones, so an omitted input written as "" leaves the
    // operator reading an input that is not there: a panic in tract's shape
    // analysis (found by the `bundle` fuzz target, a Conv's bias rewired to "").
    if matches!(node.op_type.as_str(), "Conv" | QUANTIZE | DEQUANTIZE)
        && let Some(i) = node.input.iter().position(String::is_empty)
    {
        return Err(format!(
            "{} input {i} is \"\" (an omitted optional input): expected a tensor name, \
             or the input left out of the list",
            node.op_type
        ));
    }
    outputs(node)
}

fn outputs(node: &NodeProto) -> Result<(), String> {
    if node.output.is_empty() || node.output[0].is_empty() {
        return Err(format!("{} has no output", node.op_type));
    }
    Ok(())
}

/// The constant behind `tensor`, or behind the `DequantizeLinear` that reads a
/// constant into `tensor` (quantized weights and biases).
fn constant_or_dequantized<'g>(
    graph: &'g GraphProto,
    index: &Index,
    tensor: &str,
) -> Option<&'g TensorProto> {
    if let Some(t) = index.constant(graph, tensor) {
        return Some(t);
    }
    let dq = &graph.node[index.producer(tensor)?];
    (dq.op_type == DEQUANTIZE)
        .then(|| index.constant(graph, dq.input.first()?))
        .flatten()
}

fn conv(graph: &GraphProto, index: &Index, node: &NodeProto) -> Result<(), String> {
    let weights = constant_or_dequantized(graph, index, &node.input[1]);
    // The spatial rank: from the weights when they are constant, else from
    // whichever list the node gives, so that the lists at least agree.
    let spatial = match weights {
        Some(w) if w.dims.len() < 3 || w.dims.iter().any(|&d| d <= 0) => {
            return Err(format!(
                "weights of shape {:?}, [c_out, c_in / group, kernel...] expected",
                w.dims
            ));
        }
        Some(w) => Some(w.dims.len() - 2),
        None => ["strides", "dilations", "kernel_shape"]
            .iter()
            .find_map(|a| attr::ints(node, a).map(<[i64]>::len)),
    };
    if let Some(n) = spatial {
        for (list, len, least) in [
            ("strides", n, 1),
            ("dilations", n, 1),
            ("kernel_shape", n, 1),
            ("pads", 2 * n, 0),
        ] {
            let Some(values) = attr::ints(node, list) else {
                continue;
            };
            if values.len() != len {
                return Err(format!(
                    "{list} has {} value(s) {values:?}, {len} expected for a {n}-D convolution",
                    values.len()
                ));
            }
            if let Some(v) = values.iter().find(|&&v| v < least) {
                return Err(format!("{list} {values:?} holds {v}, below {least}"));
            }
        }
    }
    if let Some(auto_pad) = attr::string(node, "auto_pad") {
        let known = [&b"NOTSET"[..], b"SAME_UPPER", b"SAME_LOWER", b"VALID", b""];
        if !known.contains(&auto_pad) {
            return Err(format!(
                "auto_pad {:?} is not an ONNX value",
                String::from_utf8_lossy(auto_pad)
            ));
        }
    }
    let group = attr::int(node, "group").unwrap_or(1);
    if group < 1 {
        return Err(format!("group {group}, at least 1 expected"));
    }
    let Some(w) = weights else {
        return Ok(());
    };
    let c_out = w.dims[0];
    if c_out % group != 0 {
        return Err(format!(
            "{c_out} output channels are not divisible by group {group}"
        ));
    }
    if let Some(kernel) = attr::ints(node, "kernel_shape")
        && kernel != &w.dims[2..]
    {
        return Err(format!(
            "kernel_shape {kernel:?} but weights of shape {:?}",
            w.dims
        ));
    }
    if let Some(bias) = node.input.get(2).filter(|b| !b.is_empty())
        && let Some(b) = constant_or_dequantized(graph, index, bias)
    {
        let len = values_in(b);
        if b.dims.len() != 1 || len != c_out as usize {
            return Err(format!(
                "bias {bias} of shape {:?} ({len} values) for {c_out} output channels",
                b.dims
            ));
        }
    }
    Ok(())
}

/// How many values a constant holds, whichever encoding it uses.
fn values_in(t: &TensorProto) -> usize {
    if t.data_type == DataType::Float as i32 {
        floats(t).map_or(0, |v| v.len())
    } else {
        integers(t).map_or(0, |v| v.len())
    }
}

/// QuantizeLinear and DequantizeLinear: ONNX requires scales positive and
/// finite, a zero point of the quantized type with one value per scale, and a
/// per-axis scale of the axis' length.
fn qdq(graph: &GraphProto, index: &Index, node: &NodeProto) -> Result<(), String> {
    let dequantize = node.op_type == DEQUANTIZE;
    let Some(scale) = index.constant(graph, &node.input[1]) else {
        // A computed scale is legal ONNX; nothing in edgebone reads one as a
        // constant (the rewrite leaves such a layer in float).
        return Ok(());
    };
    let scales = floats(scale).map_err(|e| format!("scale: {e}"))?;
    if scale.dims.len() > 1 || scales.is_empty() {
        return Err(format!(
            "scale {} of shape {:?}, a scalar or one value per channel expected",
            scale.name, scale.dims
        ));
    }
    if let Some((c, s)) = scales
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s > 0.0))
    {
        return Err(format!(
            "scale {}[{c}] is {s}; ONNX requires scales positive and finite",
            scale.name
        ));
    }
    let zero = match node.input.get(2).filter(|z| !z.is_empty()) {
        Some(z) => Some(
            index
                .constant(graph, z)
                .ok_or_else(|| format!("zero point {z} is not a constant"))?,
        ),
        None => None,
    };
    if let Some(zero) = zero {
        let types: &[DataType] = if dequantize {
            &[DataType::Int8, DataType::Uint8, DataType::Int32]
        } else {
            &[DataType::Int8, DataType::Uint8]
        };
        let range = match DataType::try_from(zero.data_type) {
            Ok(t) if types.contains(&t) => match t {
                DataType::Int8 => i8::MIN as i64..=i8::MAX as i64,
                DataType::Uint8 => 0..=u8::MAX as i64,
                _ => i32::MIN as i64..=i32::MAX as i64,
            },
            _ => {
                return Err(format!(
                    "zero point {} is {}, {} expected",
                    zero.name,
                    type_name(zero.data_type),
                    types
                        .iter()
                        .map(|t| t.as_str_name())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
        };
        let zeros = integers(zero).map_err(|e| format!("zero point: {e}"))?;
        if zeros.len() != scales.len() {
            return Err(format!(
                "{} zero point(s) for {} scale(s)",
                zeros.len(),
                scales.len()
            ));
        }
        if let Some(z) = zeros.iter().find(|z| !range.contains(z)) {
            return Err(format!(
                "zero point {} holds {z}, outside {}",
                zero.name,
                type_name(zero.data_type)
            ));
        }
    }
    // A constant being dequantized (weights, biases): its type is the zero
    // point's, and a per-axis scale has one value per slice along the axis.
    if dequantize && let Some(x) = index.constant(graph, &node.input[0]) {
        if let Some(zero) = zero
            && zero.data_type != x.data_type
        {
            return Err(format!(
                "{} is {} but its zero point {}",
                x.name,
                type_name(x.data_type),
                type_name(zero.data_type)
            ));
        }
        if scales.len() > 1 {
            let rank = x.dims.len() as i64;
            let axis = attr::int(node, "axis").unwrap_or(1);
            let along = if axis < 0 { axis + rank } else { axis };
            let Some(&len) = usize::try_from(along).ok().and_then(|a| x.dims.get(a)) else {
                return Err(format!("axis {axis} for {} of rank {rank}", x.name));
            };
            if len != scales.len() as i64 {
                return Err(format!(
                    "{} scales along axis {axis} of {} of shape {:?}",
                    scales.len(),
                    x.name,
                    x.dims
                ));
            }
        }
    }
    Ok(())
}

/// After tract has inferred the shapes: every convolution's input has the
/// channels its weights expect, and its dilated kernel fits in the padded
/// input (tract and the integer kernels would otherwise compute an empty or
/// wrapped-around output).
pub fn convolutions_fit(graph: &GraphProto, model: &InferenceModel) -> TractResult<()> {
    let index = Index::new(graph);
    for node in &graph.node {
        let weights = match node.op_type.as_str() {
            "Conv" if node.input.len() >= 2 => {
                constant_or_dequantized(graph, &index, &node.input[1])
            }
            crate::model::int8::ops::CONV | super::winograd::WINOGRAD => {
                attr::tensor_of(node, "weights")
            }
            _ => continue,
        };
        let (Some(w), Ok(found)) = (weights, model.node_by_name(&node.name)) else {
            continue;
        };
        let Some(&input) = found.inputs.first() else {
            continue;
        };
        let Some(shape) = model.outlet_fact(input)?.shape.concretize() else {
            continue;
        };
        let shape: Vec<usize> = match shape.iter().map(|d| d.to_usize()).collect() {
            Ok(s) => s,
            Err(_) => continue,
        };
        let n = w.dims.len().saturating_sub(2);
        if shape.len() != n + 2 {
            bail!(
                "node {}: input of shape {shape:?} for weights of shape {:?}",
                node.name,
                w.dims
            );
        }
        let group = attr::int(node, "group").unwrap_or(1);
        if shape[1] as i64 != w.dims[1] * group {
            bail!(
                "node {}: input has {} channels, weights of shape {:?} with group {group} expect {}",
                node.name,
                shape[1],
                w.dims,
                w.dims[1] * group
            );
        }
        // SAME padding grows with the kernel, so only explicit padding can be short.
        if attr::string(node, "auto_pad").is_some_and(|p| p.starts_with(b"SAME")) {
            continue;
        }
        let dilations = attr::ints(node, "dilations").unwrap_or(&[]);
        let pads = attr::ints(node, "pads").unwrap_or(&[]);
        for d in 0..n {
            let dilation = dilations.get(d).copied().unwrap_or(1);
            let pad = |i: usize| pads.get(i).copied().unwrap_or(0);
            let extent = (w.dims[2 + d] - 1)
                .saturating_mul(dilation)
                .saturating_add(1);
            let padded = shape[2 + d] as i64 + pad(d) + pad(d + n);
            if extent > padded {
                let dilated = if dilations.is_empty() {
                    String::new()
                } else {
                    format!(" dilated by {dilations:?}")
                };
                bail!(
                    "node {}: kernel {:?}{dilated} spans {extent} pixels, more than its padded input's {padded}",
                    node.name,
                    &w.dims[2..],
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tract_onnx::pb::ValueInfoProto;

    use super::*;
    use crate::onnx::node;

    #[test]
    fn an_output_nothing_makes_is_refused() {
        let mut g = GraphProto {
            node: vec![node("Relu", "r", &["x"], &["y"])],
            output: vec![ValueInfoProto {
                name: "z".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = graph(&g).unwrap_err();
        assert!(err.contains("graph output \"z\" is not made"), "{err}");
        // A tensor only read, never made, is a source to tract: known.
        for known in ["y", "x"] {
            g.output[0].name = known.into();
            assert_eq!(graph(&g), Ok(()));
        }
    }

    #[test]
    fn an_operator_without_its_data_input_is_refused() {
        for inputs in [&[][..], &["", "", "", "sizes"]] {
            let g = GraphProto {
                node: vec![node("Resize", "r", inputs, &["y"])],
                ..Default::default()
            };
            let err = graph(&g).unwrap_err();
            assert!(err.contains("node r: Resize has"), "{err}");
            assert!(err.contains("at least 1 expected"), "{err}");
        }
        let ok = GraphProto {
            node: vec![
                node("Constant", "c", &[], &["k"]),
                node("Resize", "r", &["x", "", "", "sizes"], &["y"]),
            ],
            ..Default::default()
        };
        assert_eq!(graph(&ok), Ok(()));
    }

    #[test]
    fn an_optional_input_named_empty_is_refused_where_tract_counts_names() {
        for (op, inputs) in [
            ("Conv", &["x", "w", ""][..]),
            (QUANTIZE, &["x", "s", ""]),
            (DEQUANTIZE, &["x", "s", ""]),
        ] {
            let g = GraphProto {
                node: vec![node(op, "n", inputs, &["y"])],
                ..Default::default()
            };
            let err = graph(&g).unwrap_err();
            assert!(err.contains("input 2 is \"\""), "{op}: {err}");
        }
        // Clip reads its optional inputs by position, with "" as absent.
        let g = GraphProto {
            node: vec![node("Clip", "c", &["x", "", "max"], &["y"])],
            ..Default::default()
        };
        assert_eq!(graph(&g), Ok(()));
    }

    /// The network the `onnx_bytes` fuzz target found (a cut MobileNetV2 with
    /// its bytes shuffled): tract-onnx panicked on its graph output.
    #[test]
    fn the_fuzzed_network_is_refused_at_load() {
        let bytes = include_bytes!(
            "../../../fuzz/crashes/onnx_bytes/crash-7e538a7e1c3f4c9169ab3819d273618de2baf403"
        );
        let Err(err) = crate::model::fuzzed::load(bytes) else {
            panic!("the network loaded");
        };
        assert!(err.to_string().contains("is not made by any node"), "{err}");
    }
}
