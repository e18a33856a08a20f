//! ONNX QuantizeLinear in place of tract's, for the quantize nodes the int8
//! rewrite leaves in the graph (a model's input, a tap, a layer with no integer
//! operator).
//!
//! tract-core 0.23's per-tensor kernel adds the zero point to `round(x / scale)
//! as i32`, which is `i32::MAX` for a huge activation or an infinity: an overflow
//! (a panic with overflow checks, a wrong −128 for +∞ in release). The
//! `onnx_bytes` fuzz target found it. This operator bounds in float before it
//! rounds, as the integer operators' requantization does, so every input, ±∞ and
//! NaN (which lands on the lowest level) included, gives the saturated level ONNX
//! asks for. One pass, per tensor or per axis.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::cast;
use tract_onnx::tract_hir::infer::{check_input_arity, check_output_arity};
use tract_onnx::tract_hir::internal::{
    Expansion, InferenceOp, InferenceResult, Solver, TensorProxy, expand,
};

use super::kernels::Requant;
use crate::onnx::attr;

const QUANTIZE: &str = "QuantizeLinear";

/// Replaces tract-onnx's parser for QuantizeLinear.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register.insert(QUANTIZE, parse);
}

fn parse(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if attr::int(node, "block_size").is_some_and(|size| size != 0) {
        bail!("{}: blocked quantization is not supported", node.name);
    }
    let op = QuantizeLinear {
        zero_point_input: node.input.len() == 3,
        axis: attr::int(node, "axis").unwrap_or(1),
    };
    Ok((expand(op), vec![]))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct QuantizeLinear {
    zero_point_input: bool,
    axis: i64,
}

impl Expansion for QuantizeLinear {
    fn name(&self) -> StaticName {
        QUANTIZE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2 + self.zero_point_input as usize)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[1].datum_type, f32::datum_type())?;
        if self.zero_point_input {
            s.equals(&outputs[0].datum_type, &inputs[2].datum_type)?;
        } else {
            s.equals(&outputs[0].datum_type, u8::datum_type())?;
        }
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let scales = constant(model, inputs[1], "y_scale")?;
        let zeros = match inputs.get(2) {
            Some(&zero) => constant(model, zero, "y_zero_point")?,
            None => rctensor0(0u8),
        };
        let fact = model.outlet_fact(inputs[0])?.clone();
        let op = Quantize::new(&scales, &zeros, self.axis, &fact)?;
        let mut x = inputs[0];
        if fact.datum_type != f32::datum_type() {
            x = model.wire_node(format!("{prefix}.to_f32"), cast(f32::datum_type()), &[x])?[0];
        }
        model.wire_node(prefix, op, &[x])
    }
}

fn constant(model: &TypedModel, outlet: OutletId, what: &str) -> TractResult<Arc<Tensor>> {
    model
        .outlet_fact(outlet)?
        .konst
        .clone()
        .with_context(|| format!("QuantizeLinear: {what} must be a constant"))
}

/// `saturate(round_half_to_even(x / scale) + zero_point)`, scale and zero point
/// per tensor or per index along `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantize {
    scales: Vec<f32>,
    zeros: Vec<i32>,
    axis: usize,
    output: DatumType,
}

impl Quantize {
    fn new(scales: &Tensor, zeros: &Tensor, axis: i64, input: &TypedFact) -> TractResult<Self> {
        let output = zeros.datum_type();
        ensure!(
            output == i8::datum_type() || output == u8::datum_type(),
            "QuantizeLinear: zero point of type {output:?}, int8 or uint8 expected"
        );
        ensure!(
            scales.len() > 0 && zeros.len() > 0,
            "QuantizeLinear: an empty scale or zero point"
        );
        let rank = input.rank();
        let axis = if axis < 0 { axis + rank as i64 } else { axis };
        let per_axis = scales.len() > 1 || zeros.len() > 1;
        let axis = if per_axis {
            ensure!(
                (0..rank as i64).contains(&axis),
                "QuantizeLinear: axis {axis} out of a rank {rank} input"
            );
            let channels = scales.len().max(zeros.len());
            ensure!(
                [1, channels].contains(&scales.len()) && [1, channels].contains(&zeros.len()),
                "QuantizeLinear: {} scales and {} zero points, one count expected",
                scales.len(),
                zeros.len()
            );
            ensure!(
                input.shape[axis as usize] == channels.to_dim(),
                "QuantizeLinear: {channels} scales for an axis of {}",
                input.shape[axis as usize]
            );
            axis as usize
        } else {
            0
        };
        Ok(Quantize {
            scales: scales
                .cast_to::<f32>()?
                .try_as_plain_ram()?
                .as_slice()?
                .to_vec(),
            zeros: zeros
                .cast_to::<i32>()?
                .try_as_plain_ram()?
                .as_slice()?
                .to_vec(),
            axis,
            output,
        })
    }

    /// `out[i] = narrow(level of xs[i])`, in runs of one scale.
    fn fill<T>(&self, shape: &[usize], xs: &[f32], out: &mut [T], narrow: impl Fn(i32) -> T) {
        let channels = self.scales.len().max(self.zeros.len());
        let inner = shape.iter().skip(self.axis + 1).product::<usize>().max(1);
        let (min, max) = if self.output == u8::datum_type() {
            (u8::MIN as i32, u8::MAX as i32)
        } else {
            (i8::MIN as i32, i8::MAX as i32)
        };
        for (run, (xs, out)) in xs.chunks(inner).zip(out.chunks_mut(inner)).enumerate() {
            let channel = run % channels;
            let scale = self.scales[channel.min(self.scales.len() - 1)];
            let zero = self.zeros[channel.min(self.zeros.len() - 1)];
            let requant = Requant { zero, min, max };
            for (x, y) in xs.iter().zip(out) {
                *y = narrow(requant.level(x / scale));
            }
        }
    }

    fn quantized<T: Datum>(
        &self,
        input: &Tensor,
        narrow: impl Fn(i32) -> T,
    ) -> TractResult<Tensor> {
        let xs = input.try_as_plain_ram()?.as_slice::<f32>()?;
        // SAFETY: `fill` writes every element, one per input value.
        let mut out = unsafe { Tensor::uninitialized::<T>(input.shape())? };
        let mut view = out.try_as_plain_ram_mut()?;
        self.fill(input.shape(), xs, view.as_slice_mut::<T>()?, narrow);
        Ok(out)
    }
}

impl Op for Quantize {
    fn name(&self) -> StaticName {
        "QuantizeLinearSaturating".into()
    }

    op_as_typed_op!();
}

// The scales are the model's constants, compared bit for bit.
impl Eq for Quantize {}

impl EvalOp for Quantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let out = if self.output == u8::datum_type() {
            self.quantized(&inputs[0], |level| level as u8)?
        } else {
            self.quantized(&inputs[0], |level| level as i8)?
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Quantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(op: &Quantize, shape: &[usize], xs: &[f32]) -> Tensor {
        let input = Tensor::from_shape(shape, xs).unwrap();
        let ctx = EvalContext::out_of_plan();
        let mut out = op.eval(&ctx, tvec!(input.into_tvalue())).unwrap();
        out.remove(0).into_tensor()
    }

    fn per_tensor(scale: f32, zero: Tensor) -> Quantize {
        let fact = f32::fact([4]);
        Quantize::new(&tensor1(&[scale]), &zero, 1, &fact).unwrap()
    }

    #[test]
    fn huge_values_and_infinities_saturate() {
        // tract's kernel overflowed i32 on these (the onnx_bytes fuzz crash).
        let op = per_tensor(1e-30, tensor0(5i8));
        let out = run(
            &op,
            &[4],
            &[1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN],
        );
        assert_eq!(out, tensor1(&[127i8, 127, -128, -128]));
    }

    #[test]
    fn rounds_half_to_even_then_adds_the_zero_point() {
        let op = per_tensor(0.5, tensor0(-3i8));
        let out = run(&op, &[4], &[0.25, 0.75, -0.25, 63.0]);
        // 0.5 → 0, 1.5 → 2, -0.5 → 0, 126 + (-3) = 123.
        assert_eq!(out, tensor1(&[-3i8, -1, -3, 123]));
    }

    #[test]
    fn uint8_saturates_at_zero_and_255() {
        let op = per_tensor(1.0, tensor0(128u8));
        let out = run(&op, &[4], &[-1000.0, -128.0, 127.0, 1000.0]);
        assert_eq!(out, tensor1(&[0u8, 0, 255, 255]));
    }

    #[test]
    fn per_axis_parameters_follow_the_axis() {
        let fact = f32::fact([1, 2, 2]);
        let scales = tensor1(&[1.0f32, 0.5]);
        let zeros = tensor1(&[0i8, 10]);
        let op = Quantize::new(&scales, &zeros, 1, &fact).unwrap();
        let out = run(&op, &[1, 2, 2], &[1.0, 2.0, 1.0, 2.0]);
        assert_eq!(
            out,
            Tensor::from_shape(&[1, 2, 2], &[1i8, 2, 12, 14]).unwrap()
        );
    }

    #[test]
    fn mismatched_parameter_counts_are_errors() {
        let fact = f32::fact([1, 3, 2]);
        let scales = tensor1(&[1.0f32, 0.5]);
        let err = Quantize::new(&scales, &tensor0(0i8), 1, &fact).unwrap_err();
        assert!(
            format!("{err}").contains("2 scales for an axis of 3"),
            "{err}"
        );
        let err = Quantize::new(&tensor0(1.0f32), &tensor0(0i32), 1, &fact).unwrap_err();
        assert!(format!("{err}").contains("int8 or uint8"), "{err}");
    }
}
