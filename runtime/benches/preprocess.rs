//! Camera frame → model tensor, for the bar: a 1280×720 YUV420 or YUYV
//! frame to MobileNetV2's 224×224 centre crop or YOLOv5's 640×640 letterbox in
//! ≤ 1 ms. `cargo bench -p edgebone --bench preprocess` (docs/speed.md says how
//! it was run and what it measured).

use criterion::{Criterion, criterion_group, criterion_main};
use edgebone::Manifest;
use edgebone::frame::{Colour, FrameRef, PixelFormat, RawLayout};
use edgebone::preprocess::Preprocessor;

const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;

/// A frame with edges and texture in every plane, so no resize path can take a
/// shortcut for flat input.
fn frame_bytes(format: PixelFormat) -> Vec<u8> {
    let pattern = |x: u32, y: u32, salt: u32| -> u8 {
        let h = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663) ^ salt)
            .wrapping_mul(2_654_435_761);
        (((x / 7 + y / 5) * 9) as u8).wrapping_add((h >> 28) as u8)
    };
    let (w, h) = (WIDTH, HEIGHT);
    let mut bytes = Vec::new();
    match format {
        PixelFormat::I420 => {
            bytes.extend((0..h).flat_map(|y| (0..w).map(move |x| pattern(x, y, 0))));
            for salt in [1, 2] {
                bytes.extend((0..h / 2).flat_map(|y| (0..w / 2).map(move |x| pattern(x, y, salt))));
            }
        }
        PixelFormat::Nv12 => {
            bytes.extend((0..h).flat_map(|y| (0..w).map(move |x| pattern(x, y, 0))));
            bytes.extend((0..h / 2).flat_map(|y| (0..w).map(move |x| pattern(x, y, 1))));
        }
        PixelFormat::Yuyv => {
            bytes.extend((0..h).flat_map(|y| (0..w * 2).map(move |x| pattern(x, y, 3))));
        }
        other => panic!("no YUV test frame for {other:?}"),
    }
    bytes
}

fn manifest(name: &str) -> Manifest {
    let path = format!(
        "{}/../models/{name}/manifest.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("the committed manifest");
    Manifest::parse(&text).expect("a valid manifest")
}

fn preprocess(c: &mut Criterion) {
    for model in ["mobilenet_v2", "yolov5n"] {
        let spec = manifest(model).input;
        for format in [PixelFormat::I420, PixelFormat::Nv12, PixelFormat::Yuyv] {
            let layout = RawLayout::new(format, WIDTH, HEIGHT, None).expect("a valid layout");
            let bytes = frame_bytes(format);
            let frame = FrameRef::Raw {
                layout: &layout,
                bytes: &bytes,
                colour: Colour::default(),
            };
            let mut pre = Preprocessor::new(&spec, spec.width, spec.height);
            let name = format!(
                "{format:?} {WIDTH}x{HEIGHT} to {model} {}x{}",
                spec.width, spec.height
            );
            c.bench_function(&name, |b| b.iter(|| pre.run(frame).expect("preprocessed")));
        }
    }
}

criterion_group!(benches, preprocess);
criterion_main!(benches);
