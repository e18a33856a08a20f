//! tract's shape analysis, driven node by node so that it can stop at a
//! contradiction tract would carry on with.
//!
//! tract infers shapes symbolically: two sizes that do not broadcast (a 3 and a
//! 28 on the same axis, as when a kernel tensor is wired into an Add) become the
//! expression `broadcast(3, 28)` rather than an error, and every layer after it
//! computes with that expression. Through a few dozen convolutions the
//! expressions grow exponentially: the bundle fuzzer's MobileNetV2 with one
//! input rewired spent minutes in the analysis (and overflowed tract's cost
//! measure in a build with overflow checks). `InferenceModelExt::analyse` runs
//! the whole analysis at once and tract's step-by-step analyser is private, so
//! the loop is here: the same worklist over tract's public per-node steps, and
//! after each step a check that every size it fixed is a plain number. The
//! input's size is always concrete here, so a size that is neither a number nor
//! written with a symbol can only be such a contradiction.

use std::collections::BTreeSet;

use tract_onnx::tract_hir::internal::*;

/// Infers every fact of `model`, stopping at the first node whose step fails
/// or whose output sizes contradict each other.
pub fn analyse(model: &mut InferenceModel) -> TractResult<()> {
    if observes_outlets(model)? {
        // Ops that read facts off other nodes (none in the networks edgebone
        // runs) need tract's own bookkeeping of who observes whom.
        return model.analyse(false).map(|_| ());
    }
    let mut to_visit: BTreeSet<usize> = model.eval_order()?.into_iter().collect();
    to_visit.extend(model.nodes().iter().map(|n| n.id));
    while let Some(node) = to_visit.pop_first() {
        let changed = step(model, node)
            .with_context(|| format!("Failed analyse for node {}", model.node(node)))?;
        for outlet in changed {
            fixed_sizes(model, outlet)?;
            if outlet.node != node {
                to_visit.insert(outlet.node);
            }
            for successor in &model.nodes()[outlet.node].outputs[outlet.slot].successors {
                if successor.node != outlet.node {
                    to_visit.insert(successor.node);
                }
            }
        }
    }
    Ok(())
}

fn observes_outlets(model: &InferenceModel) -> TractResult<bool> {
    for node in model.nodes() {
        if !node.op.observe_outlets(model, node)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One node's inference, its refined facts written back; returns the outlets
/// whose facts changed.
fn step(model: &mut InferenceModel, node: usize) -> TractResult<Vec<OutletId>> {
    let (inputs, outputs) = model.node_facts(node)?;
    let inputs: TVec<InferenceFact> = inputs.into_iter().cloned().collect();
    let outputs: TVec<InferenceFact> = outputs.into_iter().cloned().collect();
    if Some(outputs.len()) != model.node(node).op.nboutputs().ok() {
        bail!("its operator does not make {} outputs", outputs.len());
    }
    let (inferred_inputs, inferred_outputs, _) = model.node_mut(node).op.infer(
        inputs.iter().collect(),
        outputs.iter().collect(),
        tvec![],
    )?;
    let mut changed = vec![];
    let input_outlets = model.node(node).inputs.clone();
    for (&outlet, inferred) in input_outlets.iter().zip(&inferred_inputs) {
        let old = model.outlet_fact(outlet)?;
        let unified = inferred.unify(old)?;
        if &unified != old {
            changed.push((outlet, unified));
        }
    }
    for (slot, inferred) in inferred_outputs.iter().enumerate() {
        let outlet = OutletId::new(node, slot);
        let old = model.outlet_fact(outlet)?;
        let unified = old.unify(inferred)?;
        if &unified != old {
            changed.push((outlet, unified));
        }
    }
    for (outlet, fact) in &changed {
        model.set_outlet_fact(*outlet, fact.clone())?;
    }
    Ok(changed.into_iter().map(|(outlet, _)| outlet).collect())
}

fn fixed_sizes(model: &InferenceModel, outlet: OutletId) -> TractResult<()> {
    let fact = model.outlet_fact(outlet)?;
    for dim in fact.shape.dims() {
        if let GenericFactoid::Only(dim) = dim
            && dim.to_i64().is_err()
            && dim.symbols().is_empty()
        {
            bail!(
                "node {}: its inputs' shapes do not fit together (output {} would have a size of {dim})",
                model.node(outlet.node).name,
                outlet.slot
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sum = a + b` for inputs of shapes `a` and `b`. An Add of [2, 3] and
    /// [2, 4]: tract's own analysis types its output as [2, broadcast(3, 4)]
    /// and goes on.
    fn add(a: [usize; 2], b: [usize; 2]) -> InferenceModel {
        let mut model = InferenceModel::default();
        let a = model.add_source("a", f32::fact(a).into()).unwrap();
        let b = model.add_source("b", f32::fact(b).into()).unwrap();
        let sum = model
            .wire_node(
                "sum",
                tract_onnx::tract_hir::ops::math::Add.into_hir(),
                &[a, b],
            )
            .unwrap();
        model.select_output_outlets(&sum).unwrap();
        model
    }

    #[test]
    fn sizes_that_do_not_broadcast_stop_the_analysis_at_their_node() {
        let mut theirs = add([2, 3], [2, 4]);
        theirs.analyse(false).unwrap();
        let out = theirs.outlet_fact(OutletId::new(2, 0)).unwrap();
        assert!(
            out.shape
                .concretize()
                .is_none_or(|d| d[1].to_i64().is_err()),
            "tract itself must leave the size unresolved for this test to mean something: {out:?}"
        );
        let err = analyse(&mut add([2, 3], [2, 4])).unwrap_err().to_string();
        assert!(
            err.contains("node sum: its inputs' shapes do not fit together (output 0"),
            "{err}"
        );
    }

    #[test]
    fn a_consistent_graph_is_typed_as_tract_types_it() {
        let mut model = add([2, 3], [1, 3]);
        analyse(&mut model).unwrap();
        let out = model.outlet_fact(OutletId::new(2, 0)).unwrap();
        assert_eq!(
            out.shape.concretize().unwrap(),
            tvec![2.to_dim(), 3.to_dim()]
        );
        assert_eq!(out.datum_type.concretize(), Some(f32::datum_type()));
    }
}
