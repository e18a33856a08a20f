//! Bad input gets one clear line naming the file, the other images are still
//! processed, the exit code says something failed, and nothing panics.

mod common;

use std::path::Path;

use common::{data, edgebone, model, path};

const MANIFEST: &str = r#"
name = "broken"
network = "net.onnx"
sha256 = "SHA"
[input]
width = 224
height = 224
scale = 0.00392156862745098
fit = "center-crop"
resize_shorter = 256
[output]
decoding = "classifier"
"#;

fn bundle(dir: &Path, network: &[u8], manifest: &str) {
    std::fs::write(dir.join("net.onnx"), network).unwrap();
    std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    edgebone::model::sha256_hex(file.path()).unwrap()
}

fn classify(model: &Path) -> common::Run {
    let photo = data("images/imagenet-test/n01558993_robin.JPEG");
    let run = edgebone(&["classify", "--model", path(model), path(&photo)]);
    run.assert_no_panic();
    run
}

/// Exits non-zero with exactly one error line containing every `needle`.
fn assert_one_error(run: &common::Run, needles: &[&str]) {
    assert_ne!(run.code, Some(0));
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    for needle in needles {
        assert!(
            errors[0].contains(needle),
            "{needle:?} not in {:?}",
            errors[0]
        );
    }
}

#[test]
fn missing_model_folder() {
    let run = classify(Path::new("/nonexistent/bundle"));
    assert_one_error(&run, &["/nonexistent/bundle/manifest.toml", "No such file"]);
}

#[test]
fn missing_network_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.toml"), MANIFEST).unwrap();
    let run = classify(dir.path());
    assert_one_error(&run, &["net.onnx", "No such file"]);
}

#[test]
fn corrupt_network_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = b"this is not a protobuf at all \xff\xfe".repeat(10);
    bundle(
        dir.path(),
        &garbage,
        &MANIFEST.replace("SHA", &sha256(&garbage)),
    );
    let run = classify(dir.path());
    assert_one_error(&run, &["net.onnx", "not a usable model"]);
}

#[test]
fn sha256_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    bundle(
        dir.path(),
        b"replaced",
        &MANIFEST.replace("SHA", &"ab".repeat(32)),
    );
    let run = classify(dir.path());
    assert_one_error(&run, &["net.onnx", "sha256", &"ab".repeat(32)]);
}

#[test]
fn manifest_typo_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    bundle(
        dir.path(),
        b"x",
        &MANIFEST.replace("resize_shorter", "resize_shortest"),
    );
    let run = classify(dir.path());
    assert_one_error(
        &run,
        &["manifest.toml", "resize_shortest", "resize_shorter"],
    );
}

#[test]
fn bad_images_are_reported_and_the_good_ones_still_processed() {
    let dir = tempfile::tempdir().unwrap();
    let bus = std::fs::read(data("images/bus.jpg")).unwrap();
    let truncated = dir.path().join("truncated.jpg");
    std::fs::write(&truncated, &bus[..bus.len() / 3]).unwrap();
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "not an image").unwrap();
    let tiny = dir.path().join("tiny.png");
    std::fs::write(&tiny, tiny_png()).unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.jpg");
    let good = data("images/imagenet-test/n01558993_robin.JPEG");
    let bus = data("images/bus.jpg");
    let run = edgebone(&[
        "classify",
        "--model",
        path(&model("mobilenet_v2")),
        path(&truncated),
        path(&text),
        path(&good),
        path(&tiny),
        path(&empty),
        path(&missing),
        path(&bus),
    ]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(1));
    // Every good image is reported, the one after all the bad ones included.
    let lines = run.json_lines();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert_eq!(lines[0]["top"][0]["label"], "robin");
    assert_eq!(lines[1]["image"], path(&bus));
    let errors = run.errors();
    let line_for = |file: &Path| {
        let matching: Vec<_> = errors.iter().filter(|l| l.contains(path(file))).collect();
        assert_eq!(matching.len(), 1, "{errors:?}");
        matching[0].to_string()
    };
    assert!(line_for(&truncated).contains("JPEG decoding failed"));
    assert!(line_for(&text).contains("expected a JPEG or PNG"));
    assert!(line_for(&tiny).contains("too small for the model's 224x224 crop"));
    line_for(&empty);
    line_for(&missing);
    assert!(errors.iter().any(|l| l.contains("5 of 7 image(s) failed")));
}

/// A valid 8x8 RGB PNG.
fn tiny_png() -> Vec<u8> {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 200, 200]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}
