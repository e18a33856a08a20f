//! JPEG and PNG decoding, as image files and MJPEG frames are decoded, then
//! fitted to a small model input.
#![no_main]

use edgebone::RgbFrame;
use edgebone::preprocess::Preprocessor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = RgbFrame::decode(data) else {
        return;
    };
    let choice = data.last().copied().unwrap_or(0);
    let spec = edgebone_fuzz::input_spec(choice, 24, 16);
    let mut pre = Preprocessor::new(&spec, 24, 16);
    let _ = pre.run(&frame);
});
