//! Float layers in half precision (`ModelOptions::fp16`): tract's translator
//! turns the graph to f16, then its casts are swapped for [`HalfCast`].

use half::slice::HalfFloatSliceExt;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::floats::FloatPrecisionTranslator;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::model::translator::Translate;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::cnn::Conv;

use super::depthwise::DepthwiseConv;
use super::winograd::WinogradConv;

/// Every float tensor in f16 except around the operators that have no fp16
/// SIMD code: the Winograd and depthwise convolutions of ours (written for f32
/// lanes) and tract's depthwise convolutions (its f16 depthwise calls a function per element:
/// MobileNetV2 counted 1,071 M instructions on the A76 against f32's 148 M).
/// The model's input and outputs stay f32.
pub fn to_f16(model: &TypedModel) -> TractResult<TypedModel> {
    let translator =
        FloatPrecisionTranslator::with_filter(f32::datum_type(), f16::datum_type(), |node| {
            let depthwise = node.op_as::<Conv>().is_some_and(|conv| conv.group > 1);
            !depthwise && !node.op_is::<WinogradConv>() && !node.op_is::<DepthwiseConv>()
        });
    let mut model = translator.translate_model(model)?;
    for id in 0..model.nodes().len() {
        let Some(cast) = model.node(id).op_as::<Cast>() else {
            continue;
        };
        let to = cast.to;
        let input = model.outlet_fact(model.node(id).inputs[0])?;
        // Casts of constants (weights) stay tract's: it folds them at load.
        if input.konst.is_some() {
            continue;
        }
        let from = input.datum_type;
        if [from, to] == [f32::datum_type(), f16::datum_type()]
            || [from, to] == [f16::datum_type(), f32::datum_type()]
        {
            model.node_mut(id).op = Box::new(HalfCast { to });
        }
    }
    // The translator leaves the outputs in f16; the decoders read f32.
    for i in 0..model.outputs.len() {
        let outlet = model.outputs[i];
        if model.outlet_fact(outlet)?.datum_type == f16::datum_type() {
            let name = format!("{}.f32", model.node(outlet.node).name);
            let to = f32::datum_type();
            model.outputs[i] = model.wire_node(name, HalfCast { to }, &[outlet])?[0];
        }
    }
    Ok(model)
}

/// f32 ↔ f16 over whole slices by the `half` crate, which converts four lanes
/// per instruction where the core has fp16 (`fcvtn`/`fcvtl`). tract's `Cast`
/// converts one element per call (counted on the A76: about 7 instructions and
/// a call per element, 45 M per MobileNetV2 frame at the depthwise layers' edges).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HalfCast {
    to: DatumType,
}

impl Op for HalfCast {
    fn name(&self) -> StaticName {
        "HalfCast".into()
    }

    op_as_typed_op!();
}

impl EvalOp for HalfCast {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        Ok(tvec!(convert(&inputs[0], self.to)?.into_tvalue()))
    }
}

/// `tensor` (f32 or f16) as `to`, whole slices at a time (see [`HalfCast`]).
pub fn convert(tensor: &Tensor, to: DatumType) -> TractResult<Tensor> {
    let view = tensor.try_as_plain_ram()?;
    if to == f16::datum_type() {
        let from = view.as_slice::<f32>()?;
        let mut out = vec![f16::ZERO; from.len()];
        out.convert_from_f32_slice(from);
        Tensor::from_shape(tensor.shape(), &out)
    } else {
        let from = view.as_slice::<f16>()?;
        let mut out = vec![0f32; from.len()];
        from.convert_to_f32_slice(&mut out);
        Tensor::from_shape(tensor.shape(), &out)
    }
}

impl TypedOp for HalfCast {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.to.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn read_f32(name: &str) -> Vec<f32> {
        let bytes = std::fs::read(root().join("tests/data/golden").join(name)).unwrap();
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// MobileNetV2 in f16 (tract's portable f16 code on a core without fp16, the
    /// same graph a Pi 5 runs with its fp16 kernels) against PyTorch's f32 logits.
    #[test]
    fn mobilenet_v2_in_f16_keeps_the_golden_answers() {
        let path = root().join("models/mobilenet_v2/mobilenet_v2.onnx");
        let model = tract_onnx::onnx()
            .model_for_path(&path)
            .unwrap()
            .with_input_fact(0, f32::fact([1, 3, 224, 224]).into())
            .unwrap()
            .into_typed()
            .unwrap()
            .into_decluttered()
            .unwrap();
        let half = to_f16(&model).unwrap();
        let casts = half
            .nodes()
            .iter()
            .filter(|n| n.op_is::<HalfCast>())
            .count();
        // Into and out of each of the 17 depthwise convolutions, and the input.
        assert!(casts >= 35, "{casts} HalfCast nodes");
        let plan = half.into_optimized().unwrap().into_runnable().unwrap();
        for i in [0, 2] {
            let input = read_f32(&format!("mobilenet_v2.input{i}.f32"));
            let input = Tensor::from_shape(&[1, 3, 224, 224], &input).unwrap();
            let input = convert(&input, f16::datum_type()).unwrap();
            let out = plan.run(tvec!(input.into_tvalue())).unwrap();
            let logits = out[0].try_as_plain_ram().unwrap();
            let logits = logits.as_slice::<f32>().unwrap();
            let want = read_f32(&format!("mobilenet_v2.logits{i}.f32"));
            let top = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
            assert_eq!(top(logits), top(&want), "input{i}: top-1 changed");
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let diff: Vec<f32> = logits.iter().zip(&want).map(|(a, b)| a - b).collect();
            let relative = norm(&diff) / norm(&want);
            eprintln!("input{i}: relative L2 error {relative:.2e}");
            assert!(relative < 2e-2, "input{i}: relative L2 error {relative}");
        }
    }
}
