//! Writes the bundle a `bundle` fuzz input describes into a folder, so that a
//! crash can be opened with `edgebone` itself (or any ONNX viewer):
//! `cargo +nightly run --release --example bundle_replay -- CRASH_FILE OUT_DIR`
//! in fuzz/. Prints the decoded plan and what the fuzz target would run.
use arbitrary::{Arbitrary, Unstructured};
use edgebone_fuzz::bundle::{Plan, write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, out] = args.as_slice() else {
        eprintln!("usage: bundle_replay CRASH_FILE OUT_DIR");
        std::process::exit(2);
    };
    let bytes = std::fs::read(input).expect("reading the fuzz input");
    // libfuzzer-sys decodes a typed input the same way.
    let plan = Plan::arbitrary_take_rest(Unstructured::new(&bytes)).expect("decoding the plan");
    std::fs::create_dir_all(out).expect("creating the output folder");
    let mutant = write(&plan, std::path::Path::new(out));
    println!("{plan:?}");
    println!(
        "cut: {}, input size: {:?}, features: {}",
        mutant.cut, mutant.input_size, mutant.features
    );
}
