//! The one-shot commands on the bundled models and photos.

mod common;

use common::{data, edgebone, model, path};

#[test]
fn classify_prints_labelled_top_k_per_image() {
    let ray = data("images/imagenet-test/n01496331_electric_ray.JPEG");
    let robin = data("images/imagenet-test/n01558993_robin.JPEG");
    let run = edgebone(&[
        "classify",
        "--model",
        path(&model("mobilenet_v2")),
        "--top",
        "3",
        path(&ray),
        path(&robin),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines = run.json_lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["image"], path(&ray));
    assert_eq!(lines[0]["top"].as_array().unwrap().len(), 3);
    assert_eq!(lines[0]["top"][0]["class"], 5);
    assert_eq!(lines[0]["top"][0]["label"], "electric ray");
    assert_eq!(lines[1]["top"][0]["label"], "robin");
    // The report of `edgebone run`, with the image file named.
    assert_eq!(
        (lines[0]["frame"].as_u64(), lines[1]["frame"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(lines[0]["captured_unix_ms"].as_f64().unwrap() > 0.0);
    assert!(lines[0]["latency_ms"].as_f64().unwrap() > 0.0);
    for stage in ["preprocess", "infer", "postprocess"] {
        assert!(lines[0]["stages_ms"][stage].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn a_task_the_model_cannot_do_stops_with_one_line() {
    let bus = data("images/bus.jpg");
    let run = edgebone(&[
        "detect",
        "--model",
        path(&model("mobilenet_v2")),
        path(&bus),
    ]);
    run.assert_no_panic();
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    let errors = run.errors();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("detect needs a YOLOv5 model"),
        "{}",
        errors[0]
    );
}

#[test]
fn detect_maps_boxes_into_the_photo() {
    let bus = data("images/bus.jpg");
    let run = edgebone(&["detect", "--model", path(&model("yolov5n")), path(&bus)]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let line = &run.json_lines()[0];
    let dets = line["detections"].as_array().unwrap();
    let mut labels: Vec<&str> = dets.iter().map(|d| d["label"].as_str().unwrap()).collect();
    labels.sort();
    assert_eq!(labels, ["bus", "person", "person", "person"]);
    for d in dets {
        let b: Vec<f64> = serde_json::from_value(d["box"].clone()).unwrap();
        assert!(
            b[0] < b[2] && b[1] < b[3] && b[2] <= 810.0 && b[3] <= 1080.0,
            "{b:?}"
        );
    }
    // A stricter threshold keeps only the confident people.
    let run = edgebone(&[
        "detect",
        "--model",
        path(&model("yolov5n")),
        "--conf",
        "0.7",
        path(&bus),
    ]);
    assert_eq!(
        run.json_lines()[0]["detections"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn features_print_the_pyramid_and_write_npy() {
    let out = tempfile::tempdir().unwrap();
    let bus = data("images/bus.jpg");
    let run = edgebone(&[
        "features",
        "--model",
        path(&model("mobilenet_v2")),
        "--size",
        "320x320",
        "--out",
        path(out.path()),
        path(&bus),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let line = &run.json_lines()[0];
    let shapes: Vec<Vec<u64>> = line["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| serde_json::from_value(f["shape"].clone()).unwrap())
        .collect();
    assert_eq!(
        shapes,
        [
            [1, 24, 80, 80],
            [1, 32, 40, 40],
            [1, 96, 20, 20],
            [1, 1280, 10, 10]
        ]
    );
    assert_eq!(line["image"], path(&bus));
    assert_eq!(line["embedding"].as_array().unwrap().len(), 1280);
    let npy = std::fs::read(out.path().join("bus.features.18.npy")).unwrap();
    assert!(npy.starts_with(b"\x93NUMPY"));
    assert!(String::from_utf8_lossy(&npy[..128]).contains("(1, 1280, 10, 10, )"));
    let header = npy.len() - 1280 * 100 * 4;
    assert!(header <= 128, "unexpected size {}", npy.len());
    assert!(out.path().join("bus.embedding.npy").exists());
}

#[test]
fn inspect_names_parameters_as_pytorch_does() {
    let run = edgebone(&["inspect", "--model", path(&model("mobilenet_v2"))]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let out = &run.stdout;
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in\n{out}"))
            .to_string()
    };
    assert!(row("features.0.0.weight").contains("[32, 3, 3, 3]"));
    assert!(row("features.1.conv.0.0.weight").contains("[32, 1, 3, 3]"));
    assert!(row("classifier.1.weight").contains("[1000, 1280]"));
    assert!(!out.contains("onnx::"), "generated names left:\n{out}");
    // The total is the sum of the listed element counts.
    let listed: u64 = out
        .lines()
        .filter(|l| l.contains("float32") && l.starts_with("  ") && l.contains('['))
        .filter(|l| !l.contains("input") && !l.contains("logits"))
        .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        out.contains(&format!("total: {listed} parameters")),
        "{out}"
    );
    assert!(out.contains("input float32 [1, 3, 224, 224]"));
    assert!(out.contains("features.13 stride 16"));
}
