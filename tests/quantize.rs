//! Drives the real `quantize` binary: the committed int8 bundle is what the
//! command makes from the calibration photos, and it holds its accuracy on the
//! test photos (which calibration never sees).

use std::path::Path;

mod tool;
use tool::{Run, assert_fails_with, quantize, root};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `--json` report of a successful run.
fn report(run: &Run) -> serde_json::Value {
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    eprintln!("{report}");
    report
}

/// Float MobileNetV2 against `int8` on the 100 test photos.
fn mobilenet_on_test_photos(int8: &str) -> serde_json::Value {
    report(&quantize(&[
        "eval",
        "models/mobilenet_v2",
        int8,
        "--images",
        "tests/data/images/imagenet-test",
        "--json",
    ]))
}

#[test]
fn int8_mobilenet_keeps_float_accuracy_on_the_test_photos() {
    let report = mobilenet_on_test_photos("models/mobilenet_v2_int8");
    let number = |key: &str| report[key].as_f64().unwrap();
    assert_eq!(report["labelled"], 100);
    // The floor is 1.5 points and 93% agreement; this bundle aims past it.
    assert!(
        number("int8_top1") >= number("float_top1") - 0.01,
        "{report}"
    );
    assert!(number("agreement") >= 0.95, "{report}");
    assert!(number("cosine_mean") >= 0.98, "{report}");
}

/// ResNet-18 with random weights says nothing about accuracy, but its int8
/// logits must follow float's (the issue asks cosine >= 0.99 on the test photos).
#[test]
fn int8_resnet18_follows_float_logits() {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("resnet18_int8");
    let run = quantize(&[
        "int8",
        "models/resnet18_random",
        "--calib",
        "tests/data/images/imagenet-calib",
        "--out",
        out_dir.to_str().unwrap(),
        "--eval",
        "tests/data/images/imagenet-test",
        "--json",
    ]);
    let report = report(&run);
    assert_eq!(report["images"], 100);
    assert!(report["cosine_min"].as_f64().unwrap() >= 0.99, "{report}");
    let made = json(&out_dir.join("quantization.json"));
    assert_eq!(
        made["int8_layers"], 21,
        "20 convolutions and the classifier"
    );
}

/// A detector's eval decodes both models and matches their boxes: the int8
/// YOLOv5n finds float's four objects on bus.jpg (runtime/tests/parity.rs holds
/// both to Ultralytics' own boxes).
#[test]
fn int8_yolov5n_detections_match_float() {
    let photos = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("tests/data/images/bus.jpg"),
        photos.path().join("bus.jpg"),
    )
    .unwrap();
    let report = report(&quantize(&[
        "eval",
        "models/yolov5n",
        "models/yolov5n_int8",
        "--images",
        photos.path().to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(report["images"], 1);
    assert!(report["agreement"].is_null(), "{report}");
    let detections = &report["detections"];
    assert_eq!(detections["float"], 4, "{report}");
    assert_eq!(detections["matched"], 4, "{report}");
    assert!(detections["iou_min"].as_f64().unwrap() >= 0.85, "{report}");
}

/// An int8 model made by another tool runs too: ONNX Runtime's `quantize_static`
/// with per-tensor, asymmetric uint8 weights and uint8 activations
/// (tools/ort_quantize.py). Measured: 86% top-1 against float's 89%, 91%
/// agreement; a zero point read wrongly would leave next to nothing of either.
#[test]
fn int8_from_onnx_runtime_quantize_static_runs() {
    let report = mobilenet_on_test_photos("tests/data/ort-qdq/mobilenet_v2_ort_u8");
    let number = |key: &str| report[key].as_f64().unwrap();
    assert!(number("agreement") >= 0.88, "{report}");
    assert!(
        number("int8_top1") >= number("float_top1") - 0.05,
        "{report}"
    );
}

#[test]
fn int8_bundle_is_reproduced_from_the_calibration_photos() {
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("mobilenet_v2_int8");
    let run = quantize(&[
        "int8",
        "models/mobilenet_v2",
        "--calib",
        "tests/data/images/imagenet-calib",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let made = json(&out_dir.join("quantization.json"));
    let committed = json(&root().join("models/mobilenet_v2_int8/quantization.json"));
    assert_eq!(made["method"], "entropy");
    assert_eq!(made["calibration_images"], 100);
    assert_eq!(made["int8_layers"], committed["int8_layers"]);
    let (made, committed) = (
        made["activations"].as_array().unwrap(),
        committed["activations"].as_array().unwrap(),
    );
    assert_eq!(made.len(), committed.len());
    for (a, b) in made.iter().zip(committed) {
        assert_eq!(a["tensor"], b["tensor"]);
        assert_eq!(
            a["qparams"]["zero_point"], b["qparams"]["zero_point"],
            "{}",
            a["tensor"]
        );
        let (sa, sb) = (
            a["qparams"]["scale"].as_f64().unwrap(),
            b["qparams"]["scale"].as_f64().unwrap(),
        );
        assert!(
            (sa - sb).abs() <= 1e-4 * sb,
            "{}: {sa} vs {sb}",
            a["tensor"]
        );
    }
    let manifest = std::fs::read_to_string(out_dir.join("manifest.toml")).unwrap();
    assert!(
        manifest.contains("name = \"mobilenet_v2_int8\""),
        "{manifest}"
    );
    assert!(
        manifest.contains("network = \"mobilenet_v2_int8.onnx\""),
        "{manifest}"
    );
}

#[test]
fn bad_calibration_input_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let run = quantize(&[
        "int8",
        "models/mobilenet_v2",
        "--calib",
        empty.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert_fails_with(&run, "no images in it (expected .jpg, .jpeg or .png files)");

    let run = quantize(&[
        "int8",
        "models/mobilenet_v2",
        "--calib",
        "no/such/folder",
        "--out",
        out,
    ]);
    assert_fails_with(&run, "calibration folder no/such/folder");

    let wrong = dir.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    std::fs::write(wrong.join("notes.jpg"), "not a photo").unwrap();
    let run = quantize(&[
        "int8",
        "models/mobilenet_v2",
        "--calib",
        wrong.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert_fails_with(&run, "none of the 1 calibration images could be read");
    assert!(
        run.stderr.contains("notes.jpg"),
        "the skipped file is named: {}",
        run.stderr
    );

    let run = quantize(&[
        "int8",
        "models/mobilenet_v2",
        "--calib",
        "tests/data/images/imagenet-calib",
        "--out",
        out,
        "--keep-float",
        "/no/such/Conv",
    ]);
    assert_fails_with(
        &run,
        "--keep-float /no/such/Conv: the model has no node of that name",
    );
}
