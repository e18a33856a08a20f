//! Model bundles, raw bytes: the fuzzer's bytes are the network file of a
//! bundle whose manifest is sound (sha256 updated), loaded and run on one frame.
//! Its seeds are the committed networks cut after a few nodes.
#![no_main]

use edgebone::model::Outputs;
use edgebone::{Bundle, Model, ModelOptions};
use edgebone_fuzz::bundle::scratch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let network = dir.join("bytes.onnx");
    std::fs::write(&network, data).unwrap();
    let sha = edgebone::model::sha256_hex(&network).unwrap();
    let manifest = format!(
        "name = \"fuzz\"\nnetwork = \"bytes.onnx\"\nsha256 = \"{sha}\"\n\
         [input]\nwidth = 32\nheight = 32\nscale = 0.0039\nfit = \"stretch\"\n\
         [output]\ndecoding = \"classifier\"\n"
    );
    std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
    let Ok(bundle) = Bundle::open(dir) else {
        return;
    };
    let Ok(mut model) = Model::load(&bundle, &ModelOptions::default(), Outputs::Head) else {
        return;
    };
    let input = tract_onnx::prelude::Tensor::zero::<f32>(&model.input_shape()).unwrap();
    let _ = model.run(input.into());
});
