//! Drives `quantize inspect` and `quantize convert` on PyTorch checkpoints: the
//! real torchvision MobileNetV2 download (legacy format) converts to a bundle
//! that reproduces ONNX Runtime's logits through the runtime, and bad
//! checkpoints are refused with one clean error.

use std::path::{Path, PathBuf};

mod tool;
use tool::{Run, assert_fails_with, path_str as str_path, quantize, read_f32, root};

use edgebone::{Bundle, ModelOptions, Pipeline, Results, RgbFrame, Task};
use tract_onnx::prelude::{IntoTValue, Tensor};

// The crate's own torch-format writer (test support), to make checkpoints.
#[path = "../tools/src/torch/write.rs"]
mod write;

use write::{Entry, Pickle, Stored};

const CHECKPOINT: &str = "tests/data/checkpoints/mobilenet_v2-b0353104.pth";

#[test]
fn inspect_lists_the_314_tensors_as_pytorch_prints_them() {
    let run = quantize(&["inspect", CHECKPOINT]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let entries: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(" torch.Size(["))
        .collect();
    assert_eq!(entries.len(), 314);
    assert_eq!(entries[0], "features.0.0.weight torch.Size([32, 3, 3, 3])");
    assert_eq!(entries[4], "features.0.1.running_var torch.Size([32])");
    assert_eq!(
        entries[5],
        "features.0.1.num_batches_tracked torch.Size([])"
    );
    assert_eq!(entries[313], "classifier.1.bias torch.Size([1000])");
    // torchvision's sum(p.numel() for p in model.parameters()), as the shared
    // formula index records it for this architecture.
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/data/golden/formula/index.json")).unwrap(),
    )
    .unwrap();
    let params = index["models"]["mobilenet_v2"]["params"].as_u64().unwrap();
    let total = lines.iter().find(|l| l.starts_with("total:")).unwrap();
    assert!(
        total.starts_with(&format!("total: {params} parameters in 314 tensors")),
        "{total}"
    );
    assert!(run.stdout.contains("format: legacy pickle stream"));
}

fn pipeline(dir: &Path, task: Option<Task>) -> Pipeline {
    let bundle = Bundle::open(dir).unwrap();
    let task = task.unwrap_or_else(|| Task::head(&bundle.manifest));
    Pipeline::load(bundle, task, &ModelOptions::default()).unwrap()
}

#[test]
fn converted_mobilenet_v2_reproduces_the_golden_logits_and_the_shipped_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mobilenet_v2");
    let run = quantize(&[
        "convert",
        CHECKPOINT,
        "--arch",
        "mobilenet_v2",
        "--out",
        str_path(&out),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let mut converted = pipeline(&out, None);
    let golden = root().join("tests/data/golden");
    for i in 0..4 {
        let input = read_f32(&golden.join(format!("mobilenet_v2.input{i}.f32")));
        let input = Tensor::from_shape(&[1, 3, 224, 224], &input).unwrap();
        let logits = converted.infer(input.into_tvalue()).unwrap();
        let logits = edgebone::decode::f32_values(&logits[0]).unwrap();
        let want = read_f32(&golden.join(format!("mobilenet_v2.logits{i}.f32")));
        let diff = logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("input{i}: max logit difference {diff:e}");
        assert!(diff <= 1e-3, "input{i}: {diff}");
    }

    // The bundle's weights are the checkpoint's, under the same names and shapes,
    // in the same order (less the `num_batches_tracked` counters inference never reads).
    let listing = |run: Run| -> (Vec<String>, String) {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let entries = run
            .stdout
            .lines()
            .filter(|l| l.contains(" torch.Size(") && !l.contains("num_batches_tracked"))
            .map(str::to_string)
            .collect();
        let total = run
            .stdout
            .lines()
            .find(|l| l.starts_with("total:"))
            .unwrap();
        (entries, total.split(" in ").next().unwrap().to_string())
    };
    let from_checkpoint = listing(quantize(&["inspect", CHECKPOINT]));
    let from_bundle = listing(quantize(&["inspect", str_path(&out)]));
    assert_eq!(from_bundle, from_checkpoint);

    // The same taps (tensor names) and labels as the shipped, exported bundle.
    let shipped = Bundle::open(root().join("models/mobilenet_v2")).unwrap();
    let ours = Bundle::open(&out).unwrap();
    let taps = |b: &Bundle| -> Vec<(String, String, u32)> {
        b.manifest
            .taps
            .iter()
            .map(|t| (t.name.clone(), t.tensor.clone(), t.stride))
            .collect()
    };
    assert_eq!(taps(&ours), taps(&shipped));
    assert_eq!(ours.labels, shipped.labels);

    // A photo classified as `edgebone classify` does, with the shipped bundle's answer.
    let frame = RgbFrame::open(&root().join("tests/data/images/bus.jpg")).unwrap();
    let top = |p: &mut Pipeline| match p.run(&frame).unwrap().0 {
        Results::Top(top) => top.iter().map(|c| c.class).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let mut shipped = pipeline(&root().join("models/mobilenet_v2"), None);
    assert_eq!(top(&mut converted), top(&mut shipped));
}

#[test]
fn random_seed_builds_a_resnet18_with_the_feature_pyramid() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("resnet18");
    let run = quantize(&[
        "convert",
        "--arch",
        "resnet18",
        "--random-seed",
        "18",
        "--out",
        str_path(&out),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut features = pipeline(&out, Some(Task::Features));
    let frame = RgbFrame::open(&root().join("tests/data/images/bus.jpg")).unwrap();
    let Results::Features { maps, embedding } = features.run(&frame).unwrap().0 else {
        panic!("features")
    };
    let shapes: Vec<(String, Vec<usize>)> = maps
        .iter()
        .map(|m| (m.summary().name.to_string(), m.summary().shape.clone()))
        .collect();
    let want = [
        ("stem", [1, 64, 56, 56]),
        ("layer1", [1, 64, 56, 56]),
        ("layer2", [1, 128, 28, 28]),
        ("layer3", [1, 256, 14, 14]),
        ("layer4", [1, 512, 7, 7]),
    ];
    let want: Vec<(String, Vec<usize>)> = want
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect();
    assert_eq!(shapes, want);
    assert_eq!(embedding.len(), 512);
    assert!(embedding.iter().all(|v| v.is_finite()) && embedding.iter().any(|&v| v != 0.0));
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn bad_checkpoints_get_one_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let convert = |checkpoint: &Path, arch: &str| {
        quantize(&[
            "convert",
            str_path(checkpoint),
            "--arch",
            arch,
            "--out",
            str_path(&out),
        ])
    };

    let one = vec![Entry::new(
        "features.0.0.weight",
        &[16, 3, 3, 3],
        vec![0.5; 16 * 27],
        Stored::F32,
    )];
    let zip = write::zip(&one, None);
    let truncated = write_file(dir.path(), "truncated.pth", &zip[..zip.len() - 40]);
    assert_fails_with(
        &convert(&truncated, "mobilenet_v2"),
        "truncated or corrupt zip archive",
    );
    assert_fails_with(
        &quantize(&["inspect", str_path(&truncated)]),
        "truncated or corrupt zip archive",
    );

    let marker = dir.path().join("pwned");
    let evil = Pickle::default()
        .proto()
        .global("posix", "system")
        .op(b'(')
        .str(&format!("touch {}", marker.display()))
        .op(b't')
        .op(b'R')
        .stop();
    let evil = write_file(
        dir.path(),
        "evil.pth",
        &write::zip_archive("archive", &evil, &[]),
    );
    assert_fails_with(&convert(&evil, "resnet18"), "names posix.system");
    assert!(!marker.exists());

    let misshaped = write_file(dir.path(), "misshaped.pth", &write::legacy(&one, None));
    assert_fails_with(
        &convert(&misshaped, "mobilenet_v2"),
        "tensor features.0.0.weight: the checkpoint has torch.Size([16, 3, 3, 3]) but \
         mobilenet_v2 expects torch.Size([32, 3, 3, 3])",
    );

    let real = root().join(CHECKPOINT);
    assert_fails_with(
        &convert(&real, "resnet18"),
        "tensor conv1.weight: resnet18 expects torch.Size([64, 3, 7, 7]) but the checkpoint \
         has no such tensor (it has 314, the first is features.0.0.weight",
    );
    assert!(!out.exists(), "nothing written for a refused checkpoint");
}
