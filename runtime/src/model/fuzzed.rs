//! The `onnx_bytes` fuzz target's crash files (fuzz/crashes/onnx_bytes), replayed
//! as the target runs them: each network in a bundle whose manifest is sound,
//! loaded and run on one frame of zeros.

use tract_onnx::prelude::*;

use crate::model::{Bundle, Model, ModelOptions, Outputs};

const CRASHES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/crashes/onnx_bytes");

/// Loads `bytes` as the network of a 32×32 classifier bundle.
pub(crate) fn load(bytes: &[u8]) -> crate::Result<Model> {
    let dir = tempfile::tempdir().unwrap();
    let network = dir.path().join("n.onnx");
    std::fs::write(&network, bytes).unwrap();
    let sha = crate::model::sha256_hex(&network)?;
    let manifest = format!(
        "name = \"n\"\nnetwork = \"n.onnx\"\nsha256 = \"{sha}\"\n[input]\nwidth = 32\n\
         height = 32\nscale = 1.0\nfit = \"stretch\"\n[output]\ndecoding = \"classifier\"\n"
    );
    std::fs::write(dir.path().join("manifest.toml"), manifest).unwrap();
    let bundle = Bundle::open(dir.path())?;
    Model::load(&bundle, &ModelOptions::default(), Outputs::Head)
}

/// Every crash file is now refused at load or runs: none panics (with overflow
/// checks on, as in this test build). Two of them kept a QuantizeLinear that the
/// int8 rewrite leaves to the runtime with an activation past `i32::MAX` levels;
/// one is an empty graph.
#[test]
fn every_crash_file_loads_and_runs_or_is_refused() {
    let mut ran = 0;
    for entry in std::fs::read_dir(CRASHES).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let Ok(mut model) = load(&bytes) else {
            continue;
        };
        let input = Tensor::zero::<f32>(&model.input_shape()).unwrap();
        if model.run(input.into()).is_ok() {
            ran += 1;
        }
    }
    // The two QuantizeLinear crashes load and run; a fix that refused them
    // instead would be a different fix.
    assert!(ran >= 2, "{ran} crash networks ran");
}

/// Two bytes: a model whose graph is empty. tract indexed its empty list of
/// inputs to set input 0's shape.
#[test]
fn an_empty_graph_is_refused() {
    let Err(err) = load(b":\0") else {
        panic!("an empty graph loaded");
    };
    assert!(err.to_string().contains("the graph has no input"), "{err}");
}
