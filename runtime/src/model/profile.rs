//! Where inference time goes, by operator: `edgebone bench --profile`.
//!
//! tract's own profiler lives in its command-line tool, not in the library, so
//! this times each node of the plan around tract's `eval` and sums by the
//! operator's name (every convolution kind, copy and activation separately).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval;

/// Time and node evaluations per operator name, summed over runs.
#[derive(Debug, Default, Clone)]
pub struct Profile {
    ops: BTreeMap<String, (Duration, usize)>,
    runs: usize,
}

/// One operator's share of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    pub op: String,
    /// Mean time per run.
    pub per_run: Duration,
    /// Nodes of this operator per run.
    pub nodes: usize,
}

impl Profile {
    /// Operators by time per run, largest first.
    pub fn by_time(&self) -> Vec<OpTime> {
        let runs = self.runs.max(1);
        let mut ops: Vec<OpTime> = self
            .ops
            .iter()
            .map(|(op, (total, nodes))| OpTime {
                op: op.clone(),
                per_run: *total / runs as u32,
                nodes: nodes / runs,
            })
            .collect();
        ops.sort_by(|a, b| b.per_run.cmp(&a.per_run).then(a.op.cmp(&b.op)));
        ops
    }

    fn add(&mut self, op: &str, spent: Duration) {
        let entry = self.ops.entry(op.to_string()).or_default();
        entry.0 += spent;
        entry.1 += 1;
    }
}

/// Runs the plan once, timing every node into `profile`.
pub(super) fn run(
    state: &mut TypedSimpleState,
    inputs: TVec<TValue>,
    profile: &mut Profile,
) -> TractResult<TVec<TValue>> {
    let outputs = state.run_plan_with_eval(inputs, |ctx, op_state, node, input| {
        let start = Instant::now();
        let out = eval(ctx, op_state, node, input);
        profile.add(&node.op().name(), start.elapsed());
        out
    })?;
    profile.runs += 1;
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_operator_and_divides_by_runs() {
        let mut profile = Profile::default();
        for _ in 0..2 {
            profile.add("Conv", Duration::from_millis(3));
            profile.add("Conv", Duration::from_millis(1));
            profile.add("Add", Duration::from_millis(6));
            profile.runs += 1;
        }
        let ops = profile.by_time();
        assert_eq!(ops[0].op, "Add");
        assert_eq!(ops[0].per_run, Duration::from_millis(6));
        assert_eq!(
            (ops[1].per_run, ops[1].nodes),
            (Duration::from_millis(4), 2)
        );
    }
}
