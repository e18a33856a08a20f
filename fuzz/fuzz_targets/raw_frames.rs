//! The raw frame reader on an arbitrary byte stream: every pixel format, size
//! and stride, cut into frames as a pipe source cuts them, and each frame
//! preprocessed into a small model input as the device loop does.
#![no_main]

use arbitrary::Arbitrary;
use edgebone::frame::{Colour, FrameRef, Matrix, PixelFormat, Range, RawLayout};
use edgebone::preprocess::Preprocessor;
use edgebone_firmware::source::StreamReader;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Stream {
    format: u8,
    width: u16,
    height: u16,
    stride: Option<u16>,
    colour: u8,
    fit: u8,
    model_width: u8,
    model_height: u8,
    bytes: Vec<u8>,
}

const FORMATS: [PixelFormat; 5] = [
    PixelFormat::I420,
    PixelFormat::Nv12,
    PixelFormat::Yuyv,
    PixelFormat::Rgb24,
    PixelFormat::Mjpeg,
];

fuzz_target!(|s: Stream| {
    let format = FORMATS[s.format as usize % FORMATS.len()];
    // Sizes up to 4095 (and any stride): layouts of every shape, frames that
    // stay small enough for many runs a second.
    let Ok(layout) = RawLayout::new(
        format,
        (s.width % 4096) as u32,
        (s.height % 4096) as u32,
        s.stride.map(u32::from),
    ) else {
        return;
    };
    let colour = Colour {
        matrix: [Matrix::Bt601, Matrix::Bt709][s.colour as usize % 2],
        range: [Range::Limited, Range::Full][(s.colour / 2) as usize % 2],
    };
    let (w, h) = (
        1 + s.model_width as u32 % 64,
        1 + s.model_height as u32 % 64,
    );
    let spec = edgebone_fuzz::input_spec(s.fit, w, h);
    let mut pre = Preprocessor::new(&spec, w, h);
    let mut reader = StreamReader::new(&s.bytes[..], layout, colour);
    for _ in 0..4 {
        let Ok(Some(pixels)) = reader.next() else {
            break;
        };
        let frame = FrameRef::Raw {
            layout: &pixels.layout,
            bytes: &pixels.bytes,
            colour: pixels.colour,
        };
        let _ = pre.run(frame);
    }
});
