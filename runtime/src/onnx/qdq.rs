//! ONNX's QDQ convention, both halves: how `quantize` writes a quantized
//! tensor and how the int8 rewrite reads one back.
//!
//! A quantized activation is `QuantizeLinear(x, scale, zero_point)` followed by
//! `DequantizeLinear` with the same parameters: per tensor, int8, `real = scale
//! · (q - zero_point)`. Weights are int8 behind a per-output-channel
//! DequantizeLinear, symmetric (zero point 0, levels ±127); biases are int32 at
//! `input scale · weight scale`. A ReLU or Clip right before a QuantizeLinear
//! may be folded into its clamping to the int8 range.

use serde::Serialize;
use tract_onnx::pb::{GraphProto, NodeProto};

use super::{GraphError, Index, attr, tensor};

pub const QUANTIZE: &str = "QuantizeLinear";
pub const DEQUANTIZE: &str = "DequantizeLinear";

/// The levels of an int8 activation.
pub const LEVELS: std::ops::RangeInclusive<i32> = -128..=127;

/// The largest level of a symmetric weight: -127..=127, so that negating a
/// weight is exact.
pub const WEIGHT_LEVEL: f32 = 127.0;

/// Affine int8 parameters of one tensor: `real = scale · (q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i8,
}

impl QParams {
    /// Not quantized: real values, unit scale.
    pub const UNIT: QParams = QParams {
        scale: 1.0,
        zero_point: 0,
    };

    /// The parameters spanning `[lo, hi]` widened to contain 0, so that 0
    /// (padding, ReLU's floor) is exact.
    pub fn spanning(lo: f32, hi: f32) -> QParams {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        if hi - lo <= f32::MIN_POSITIVE {
            return QParams::UNIT;
        }
        let (min, max) = (*LEVELS.start() as f32, *LEVELS.end() as f32);
        let scale = (hi - lo) / (max - min);
        let zero_point = (min - lo / scale).round_ties_even().clamp(min, max) as i8;
        QParams { scale, zero_point }
    }

    fn zero(&self) -> i32 {
        self.zero_point as i32
    }

    /// ONNX QuantizeLinear: round half to even, saturate to int8.
    pub fn quantize(&self, real: f64) -> i32 {
        if real.is_infinite() {
            return if real > 0.0 {
                *LEVELS.end()
            } else {
                *LEVELS.start()
            };
        }
        // Saturating: a tiny scale (a valid, positive one) sends `real / scale` to
        // i64's end, where adding the zero point overflowed (found by the `bundle`
        // fuzz target, in the SiLU table of a mutated YOLOv5n).
        let level = ((real / f64::from(self.scale)).round_ties_even() as i64)
            .saturating_add(self.zero() as i64);
        level.clamp(*LEVELS.start() as i64, *LEVELS.end() as i64) as i32
    }

    /// ONNX DequantizeLinear of one level.
    pub fn dequantize(&self, level: i32) -> f64 {
        (level - self.zero()) as f64 * f64::from(self.scale)
    }

    /// Whether every level lies inside `bounds`, so that quantizing clamps as a
    /// ReLU or Clip to those bounds would (and the clamp node can go).
    pub fn stays_within(&self, bounds: Bounds) -> bool {
        // (level - zero) and scale multiply exactly in f64; rounding to f32 then
        // gives the f32 product.
        let value = |level: i32| self.dequantize(level) as f32;
        // A relative margin for the float rounding of scale × level.
        let margin = 1e-6 * self.scale * 255.0;
        value(*LEVELS.start()) >= bounds.lo - margin && value(*LEVELS.end()) <= bounds.hi + margin
    }
}

/// The real interval a ReLU or Clip keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub lo: f32,
    pub hi: f32,
}

impl Bounds {
    pub const NONE: Bounds = Bounds {
        lo: f32::NEG_INFINITY,
        hi: f32::INFINITY,
    };
}

/// The bounds of a `Relu` or `Clip` node; `None` for any other node. Clip's
/// bounds are inputs 1 and 2 since opset 11, attributes before; one that is
/// given but is not a one-value float constant is an error.
pub fn clamp_bounds(
    graph: &GraphProto,
    index: &Index,
    node: &NodeProto,
) -> Result<Option<Bounds>, GraphError> {
    match node.op_type.as_str() {
        "Relu" => Ok(Some(Bounds {
            lo: 0.0,
            hi: f32::INFINITY,
        })),
        "Clip" => {
            let bound = |slot: usize, name: &str, default: f32| match node.input.get(slot) {
                Some(input) if !input.is_empty() => {
                    let value = index.constant(graph, input).ok_or_else(|| {
                        GraphError(format!("{}: its {name} bound is not a constant", node.name))
                    })?;
                    tensor::scalar(value)
                }
                _ => Ok(attr::float(node, name).unwrap_or(default)),
            };
            Ok(Some(Bounds {
                lo: bound(1, "min", f32::NEG_INFINITY)?,
                hi: bound(2, "max", f32::INFINITY)?,
            }))
        }
        _ => Ok(None),
    }
}

/// Symmetric int8 weights, one scale per channel along `axis` of `dims`
/// (zero points are 0). Returns the levels and the scales.
pub fn quantize_weights(values: &[f32], dims: &[i64], axis: usize) -> (Vec<i8>, Vec<f32>) {
    let channels = dims[axis] as usize;
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let channel_of = |i: usize| (i / inner) % channels;
    let mut absmax = vec![0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = channel_of(i);
        absmax[c] = absmax[c].max(v.abs());
    }
    // An all-zero channel still needs a valid (non-zero) scale.
    let scales: Vec<f32> = absmax
        .iter()
        .map(|&m| if m > 0.0 { m / WEIGHT_LEVEL } else { 1.0 })
        .collect();
    let q = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (v / scales[channel_of(i)])
                .round_ties_even()
                .clamp(-WEIGHT_LEVEL, WEIGHT_LEVEL) as i8
        })
        .collect();
    (q, scales)
}

/// int32 biases at `scales` (input scale · weight scale, per channel),
/// rounded half to even and saturated.
pub fn quantize_bias(values: &[f32], scales: &[f32]) -> Vec<i32> {
    values
        .iter()
        .zip(scales)
        .map(|(v, s)| {
            (v / s)
                .round_ties_even()
                .clamp(i32::MIN as f32, i32::MAX as f32) as i32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{node, tensor::float_tensor};
    use super::*;

    #[test]
    fn spanning_makes_zero_exact_and_covers_the_range() {
        let q = QParams::spanning(0.0, 6.0);
        assert_eq!(q.zero_point, -128);
        assert!((q.scale * 255.0 - 6.0).abs() < 1e-6);
        let q = QParams::spanning(-1.0, 3.0);
        assert!(
            q.dequantize(-128) <= -0.98 && q.dequantize(127) >= 2.98,
            "{q:?}"
        );
        assert_eq!(q.dequantize(q.zero_point as i32), 0.0);
        assert_eq!(QParams::spanning(0.0, 0.0), QParams::UNIT);
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let q = QParams {
            scale: 0.5,
            zero_point: 10,
        };
        assert_eq!(q.quantize(0.25), 10);
        assert_eq!(q.quantize(0.75), 12);
        assert_eq!(q.quantize(-0.25), 10);
        assert_eq!(q.quantize(1000.0), 127);
        assert_eq!(q.quantize(-1000.0), -128);
        assert_eq!(q.quantize(f64::INFINITY), 127);
        assert_eq!(q.quantize(f64::NEG_INFINITY), -128);
        // A tiny scale puts the level at i64's end before the zero point is added.
        let tiny = QParams {
            scale: f32::MIN_POSITIVE,
            zero_point: 10,
        };
        assert_eq!(tiny.quantize(f64::MAX), 127);
        let tiny = QParams {
            zero_point: -10,
            ..tiny
        };
        assert_eq!(tiny.quantize(f64::MIN), -128);
    }

    #[test]
    fn dequantize_then_quantize_is_the_identity_on_levels() {
        let q = QParams::spanning(-0.7, 2.3);
        for level in LEVELS {
            assert_eq!(q.quantize(q.dequantize(level)), level);
        }
    }

    #[test]
    fn a_clamp_folds_only_when_the_levels_stay_inside_it() {
        let relu = Bounds {
            lo: 0.0,
            hi: f32::INFINITY,
        };
        assert!(QParams::spanning(0.0, 2.55).stays_within(relu));
        assert!(!QParams::spanning(-0.1, 2.55).stays_within(relu));
        let clip = Bounds { lo: 0.0, hi: 1.0 };
        assert!(!QParams::spanning(0.0, 2.55).stays_within(clip));
        assert!(QParams::spanning(0.0, 1.0).stays_within(clip));
        assert!(QParams::UNIT.stays_within(Bounds::NONE));
    }

    fn bounds_of(
        nodes: Vec<NodeProto>,
        init: Vec<tract_onnx::pb::TensorProto>,
    ) -> Result<Option<Bounds>, GraphError> {
        let graph = GraphProto {
            node: nodes,
            initializer: init,
            ..Default::default()
        };
        let index = Index::new(&graph);
        clamp_bounds(&graph, &index, graph.node.last().unwrap())
    }

    #[test]
    fn clip_bounds_from_inputs_constants_or_attributes() {
        let from_inputs = bounds_of(
            vec![node("Clip", "c", &["x", "lo", "hi"], &["y"])],
            vec![
                float_tensor("lo", &[], &[0.0]),
                float_tensor("hi", &[], &[6.0]),
            ],
        );
        assert_eq!(from_inputs, Ok(Some(Bounds { lo: 0.0, hi: 6.0 })));
        // PyTorch's exporter writes the bounds as Constant nodes; an absent
        // bound is unbounded.
        let mut k = node("Constant", "k", &[], &["hi"]);
        k.attribute
            .push(attr::tensor("value", float_tensor("", &[], &[6.0])));
        let from_constant = bounds_of(vec![k, node("Clip", "c", &["x", "", "hi"], &["y"])], vec![]);
        assert_eq!(
            from_constant,
            Ok(Some(Bounds {
                lo: f32::NEG_INFINITY,
                hi: 6.0
            }))
        );
        let mut old = node("Clip", "c", &["x"], &["y"]);
        old.attribute = vec![attr::float_attr("min", 0.0), attr::float_attr("max", 6.0)];
        assert_eq!(
            bounds_of(vec![old], vec![]),
            Ok(Some(Bounds { lo: 0.0, hi: 6.0 }))
        );
        let relu = bounds_of(vec![node("Relu", "r", &["x"], &["y"])], vec![]);
        assert_eq!(relu.unwrap().unwrap().lo, 0.0);
        assert_eq!(
            bounds_of(vec![node("Sigmoid", "s", &["x"], &["y"])], vec![]),
            Ok(None)
        );
    }

    #[test]
    fn a_computed_clip_bound_is_an_error_naming_the_node() {
        let computed = bounds_of(
            vec![
                node("Relu", "r", &["m"], &["hi"]),
                node("Clip", "clip6", &["x", "", "hi"], &["y"]),
            ],
            vec![],
        );
        assert_eq!(
            computed,
            Err(GraphError("clip6: its max bound is not a constant".into()))
        );
    }

    #[test]
    fn biases_round_half_to_even_and_saturate() {
        let q = quantize_bias(&[0.25, 0.75, -1.0, 1e12], &[0.5, 0.5, 0.001, 1e-3]);
        assert_eq!(q, [0, 2, -1000, i32::MAX]);
    }

    #[test]
    fn weights_are_symmetric_per_channel() {
        // two output channels of two values: [1, -0.5] and [0.02, 0.015]
        let (q, scales) = quantize_weights(&[1.0, -0.5, 0.02, 0.015], &[2, 1, 1, 2], 0);
        assert_eq!(q, vec![127, -64, 127, 95]);
        assert!((scales[0] - 1.0 / 127.0).abs() < 1e-9);
        assert!((scales[1] - 0.02 / 127.0).abs() < 1e-9);
        // Gemm weights [K=2, N=2] quantized per column (axis 1)
        let (q, _) = quantize_weights(&[1.0, 0.1, -1.0, 0.05], &[2, 2], 1);
        assert_eq!(q, vec![127, 127, -127, 64]);
        // An all-zero channel keeps a usable scale.
        let (q, scales) = quantize_weights(&[0.0, 0.0], &[1, 2], 0);
        assert_eq!((q, scales), (vec![0, 0], vec![1.0]));
    }
}
