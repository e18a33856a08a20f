//! MobileNetV2 on the 100 labelled test photos, through edgebone's own decoding
//! and preprocessing, against PyTorch's top-1 on the same photos.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use edgebone::{Bundle, ModelOptions, Pipeline, Results, RgbFrame, Task};
use serde_json::Value;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

#[test]
fn mobilenet_v2_agrees_with_pytorch_on_the_test_photos() {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(data().join("golden/mobilenet_v2.test.json")).unwrap(),
    )
    .unwrap();
    let torch_top1: HashMap<String, u64> = golden["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["file"].as_str().unwrap().to_string(),
                i["top5"][0].as_u64().unwrap(),
            )
        })
        .collect();
    let dir = data().join("images/imagenet-test");
    let labels = std::fs::read_to_string(dir.join("labels.tsv")).unwrap();
    let bundle =
        Bundle::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/mobilenet_v2")).unwrap();
    let top1 = Task::Classify { top_k: 1 };
    let mut pipeline = Pipeline::load(bundle, top1, &ModelOptions::default()).unwrap();
    let (mut agree, mut correct, mut total) = (0, 0, 0);
    let mut disagreements = Vec::new();
    for line in labels.lines().skip(1) {
        let fields: Vec<&str> = line.split('\t').collect();
        let (file, label): (&str, u64) = (fields[0], fields[1].parse().unwrap());
        let frame = RgbFrame::open(&dir.join(file)).unwrap();
        let Results::Top(top) = pipeline.run(&frame).unwrap().0 else {
            panic!("a classify pipeline gives classes")
        };
        let ours = top[0].class as u64;
        total += 1;
        correct += (ours == label) as usize;
        if ours == torch_top1[file] {
            agree += 1;
        } else {
            disagreements.push(file.to_string());
        }
    }
    assert_eq!(total, 100);
    let accuracy = correct as f64 / total as f64;
    eprintln!(
        "top-1 agreement with PyTorch {agree}/100, accuracy {accuracy:.2}; differ on {disagreements:?}"
    );
    assert!(
        agree >= 98,
        "only {agree}/100 agree with PyTorch: {disagreements:?}"
    );
    assert!(accuracy >= 0.88, "accuracy {accuracy}");
}
