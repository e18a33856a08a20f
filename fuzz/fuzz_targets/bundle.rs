//! Model bundles, structure-aware: a committed bundle's graph (whole, or cut
//! after a few nodes) and manifest edited as `edgebone_fuzz::bundle::Plan`
//! says, written with its sha256 updated, then loaded (validation, int8 and
//! Winograd rewrites, tract) and run on one frame.
#![no_main]

use edgebone_fuzz::bundle::{Plan, load_and_run, scratch, write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|plan: Plan| {
    let mutant = write(&plan, scratch());
    load_and_run(scratch(), &mutant);
});
