//! Writes the generated seed corpora into `fuzz/corpus/<target>/gen-*`: small
//! images, raw-frame streams, wire lines and frames made by the real encoders,
//! checkpoints made by the test writer, and the committed networks cut after a
//! few nodes. The copied seeds (manifests, configs) come from `tools/fuzz.sh`.

use edgebone::decode::{Class, Detection};
use edgebone::{Latency, Results};
use edgebone_firmware::report::{Report, wire};
use edgebone_fuzz::bundle::{MODELS, bases};
use edgebone_fuzz::torch_write::{self, Entry, Stored};
use prost::Message;
// Built with the fuzz targets' flags (their dependencies reused), whose
// coverage hooks libFuzzer provides.
use libfuzzer_sys as _;

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = edgebone_fuzz::repo().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("gen-{name}")), bytes).unwrap();
}

fn encoded(image: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

fn images() -> Vec<(&'static str, Vec<u8>)> {
    use image::{DynamicImage, ImageFormat, RgbImage};
    let rgb = RgbImage::from_fn(9, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 99]));
    let rgb = DynamicImage::ImageRgb8(rgb);
    vec![
        ("rgb.jpg", encoded(&rgb, ImageFormat::Jpeg)),
        ("rgb.png", encoded(&rgb, ImageFormat::Png)),
        (
            "grey.png",
            encoded(&DynamicImage::ImageLuma8(rgb.to_luma8()), ImageFormat::Png),
        ),
        (
            "rgba.png",
            encoded(&DynamicImage::ImageRgba8(rgb.to_rgba8()), ImageFormat::Png),
        ),
        (
            "rgb16.png",
            encoded(&DynamicImage::ImageRgb16(rgb.to_rgb16()), ImageFormat::Png),
        ),
        (
            "grey.jpg",
            encoded(&DynamicImage::ImageLuma8(rgb.to_luma8()), ImageFormat::Jpeg),
        ),
    ]
}

/// `raw_frames`' input as `arbitrary` reads it: format, width, height, stride
/// (a flag byte then u16), colour, fit, model size, then the stream.
fn stream(format: u8, w: u16, h: u16, stride: Option<u16>, bytes: &[u8]) -> Vec<u8> {
    let mut s = vec![format];
    s.extend_from_slice(&w.to_le_bytes());
    s.extend_from_slice(&h.to_le_bytes());
    match stride {
        Some(st) => {
            s.push(1);
            s.extend_from_slice(&st.to_le_bytes());
        }
        None => s.push(0),
    }
    s.extend_from_slice(&[1, 0, 15, 9]);
    s.extend_from_slice(bytes);
    s
}

fn report(results: Results) -> Report {
    Report {
        image: None,
        frame: 12,
        captured_unix_ms: 1.7e12,
        latency_ms: 33.5,
        stages_ms: Latency::default(),
        results,
    }
}

fn main() {
    let imgs = images();
    for (name, bytes) in &imgs {
        put("image", name, bytes);
    }
    let jpeg = &imgs[0].1;
    let ramp: Vec<u8> = (0..=255).cycle().take(2 * 8 * 6 * 3 + 5).collect();
    put("raw_frames", "i420", &stream(0, 8, 6, None, &ramp));
    put(
        "raw_frames",
        "i420-stride",
        &stream(0, 8, 6, Some(12), &ramp),
    );
    put("raw_frames", "nv12", &stream(1, 8, 6, Some(10), &ramp));
    put("raw_frames", "yuyv", &stream(2, 8, 5, None, &ramp));
    put("raw_frames", "rgb24", &stream(3, 7, 5, Some(24), &ramp));
    let mut mjpeg = jpeg.clone();
    mjpeg.extend_from_slice(jpeg);
    put("raw_frames", "mjpeg", &stream(4, 1, 1, None, &mjpeg));

    let top = Results::Top(vec![Class {
        class: 3,
        label: "robin".into(),
        score: 0.5,
    }]);
    let dets = Results::Detections(vec![Detection {
        class: 5,
        label: "bus".into(),
        score: 0.75,
        bbox: [1.0, 2.0, 30.0, 40.5],
    }]);
    for (name, results) in [("top", top), ("detections", dets)] {
        let r = report(results);
        put("wire", &format!("{name}.ndjson"), &wire::ndjson(7, &r));
        put("wire", &format!("{name}.cobs"), &wire::binary(7, &r));
    }

    let entries = [
        Entry::new(
            "conv.weight",
            &[2, 1, 2, 2],
            (0..8).map(|v| v as f32).collect(),
            Stored::F32,
        ),
        Entry::new("conv.bias", &[2], vec![0.5, -1.0], Stored::F16),
        Entry::new("bn.num_batches_tracked", &[], vec![3.0], Stored::I64),
    ];
    put("torch", "state_dict.zip", &torch_write::zip(&entries, None));
    put(
        "torch",
        "nested.zip",
        &torch_write::zip(&entries, Some("state_dict")),
    );
    put(
        "torch",
        "state_dict.legacy",
        &torch_write::legacy(&entries, None),
    );
    let mut t = Entry::new(
        "fc.weight",
        &[2, 3],
        (0..6).map(|v| v as f32).collect(),
        Stored::F32,
    );
    t.transposed = true;
    t.offset = 2;
    put(
        "torch",
        "strided.legacy",
        &torch_write::legacy(&[t], Some("model")),
    );

    // Networks cut after a few nodes: small files that still hold a real
    // graph's operators, constants and QDQ pairs.
    for (base, name) in bases().iter().zip(MODELS) {
        for k in [3usize, 9] {
            let mut proto = base.proto.clone();
            let graph = edgebone::onnx::graph_mut(&mut proto);
            edgebone_fuzz::bundle::cut_for_seed(graph, k);
            let bytes = proto.encode_to_vec();
            if bytes.len() < 200_000 {
                put("onnx_bytes", &format!("{name}-{k}.onnx"), &bytes);
            }
        }
    }
    // `bundle` inputs: all-zero bytes load the whole int8 MobileNetV2 as it
    // is; the others pick models, cuts and edits.
    for (i, seed) in [&[0u8; 4][..], &[1, 1, 5, 0, 0, 1, 0, 2, 3, 1, 0, 0, 0, 7]]
        .iter()
        .enumerate()
    {
        put("bundle", &format!("plan{i}"), seed);
    }
}
