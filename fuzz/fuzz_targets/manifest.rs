//! `manifest.toml` as a bundle gives it: parsed and checked, and a manifest
//! that passes builds its preprocessor and fits a frame.
#![no_main]

use edgebone::RgbFrame;
use edgebone::model::Manifest;
use edgebone::preprocess::Preprocessor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::parse(text) else {
        return;
    };
    // At the manifest's own size, as `edgebone` loads it.
    let input = &manifest.input;
    let mut pre = Preprocessor::new(input, input.width, input.height);
    let frame = RgbFrame::new(7, 5, vec![200; 7 * 5 * 3]).unwrap();
    let _ = pre.run(&frame);
});
