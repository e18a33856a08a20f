//! Drives `quantize head` and `quantize train-head` on the shipped MobileNetV2:
//! a new head has the asked class count and runs; a head trained for "animal or
//! object" (ImageNet classes 0–397 are animals) on the committed calibration
//! photos answers the committed test photos, gives the same answers through the
//! runtime as its own evaluation, and survives `quantize int8`.
//!
//! The must-hold figure (trained on the shared calib + val photos, 600,
//! evaluated on test) needs the 500 val photos, which are not committed: it is
//! measured by hand, docs/training.md has the command and the result. Here the
//! head learns from the 100 committed calibration photos only, so the bound is
//! lower (0.86 measured with the defaults; bound 0.80).

use std::path::{Path, PathBuf};

mod tool;
use tool::{path_str as s, quantize, root, run};

use edgebone::{Bundle, ModelOptions, Pipeline, Results, RgbFrame, Task};

/// The `edgebone` binary of the same build, when it has been built: this
/// package's tests cannot ask cargo for another package's binary, so without
/// it the runtime is driven through `Pipeline`, which is what `edgebone
/// classify` runs (firmware/src/oneshot.rs).
fn edgebone() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_BIN_EXE_quantize")).with_file_name("edgebone");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "note: {} not built (cargo build -p edgebone-firmware); checked through Pipeline only",
            path.display()
        );
        None
    }
}

/// The ImageNet folder `src` (with labels.tsv) as an ImageFolder: `animal/`
/// (classes 0–397) and `object/`; `per_class` limits the photos per folder.
fn animal_or_object(src: &Path, dst: &Path, per_class: usize) {
    let labels = std::fs::read_to_string(src.join("labels.tsv")).unwrap();
    let mut counts = [0usize; 2];
    for line in labels.lines().skip(1) {
        let mut fields = line.split('\t');
        let (file, class) = (fields.next().unwrap(), fields.next().unwrap());
        let object = class.parse::<usize>().unwrap() >= 398;
        if counts[object as usize] == per_class {
            continue;
        }
        counts[object as usize] += 1;
        let dir = dst.join(if object { "object" } else { "animal" });
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(src.join(file), dir.join(file)).unwrap();
    }
}

fn classify(dir: &Path) -> Pipeline {
    let bundle = Bundle::open(dir).unwrap();
    Pipeline::load(
        bundle,
        Task::Classify { top_k: 1 },
        &ModelOptions::default(),
    )
    .unwrap()
}

fn top1(pipeline: &mut Pipeline, photo: &Path) -> String {
    match pipeline.run(&RgbFrame::open(photo).unwrap()).unwrap().0 {
        Results::Top(top) => top[0].label.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_head_has_the_asked_classes_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("three");
    let r = quantize(&[
        "head",
        "models/mobilenet_v2",
        "--classes",
        "3",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);

    let mut pipeline = classify(&out);
    let frame = RgbFrame::open(&root().join("tests/data/images/bus.jpg")).unwrap();
    let (_, logits) = pipeline.run_with_raw(&frame).unwrap();
    assert_eq!(logits.shape(), [1, 3]);
    assert_eq!(pipeline.bundle().labels, ["class0", "class1", "class2"]);

    let r = quantize(&["inspect", s(&out)]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "\nclassifier.1.weight torch.Size([3, 1280])\nclassifier.1.bias torch.Size([3])\n"
        ),
        "{}",
        r.stdout
    );
    let head = r.stdout.lines().find(|l| l.starts_with("head: ")).unwrap();
    assert!(head.starts_with("head: classifier.1 ("), "{head}");
    assert!(head.contains("new, untrained (seed 0)"), "{head}");
    let frozen = r
        .stdout
        .lines()
        .find(|l| l.starts_with("frozen: "))
        .unwrap();
    // Everything but the two head tensors, from the source bundle.
    let total = r.stdout.lines().find(|l| l.starts_with("total: ")).unwrap();
    let tensors: usize = total
        .split(" in ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        frozen.contains(&format!("the other {} tensors", tensors - 2)),
        "{frozen}"
    );
    assert!(frozen.contains("backbone of mobilenet_v2"), "{frozen}");

    if let Some(edgebone) = edgebone() {
        let r = run(
            &edgebone,
            &["classify", "--model", s(&out), "tests/data/images/bus.jpg"],
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let report: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
        let top = report["top"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{report}");
        assert!(
            top.iter()
                .all(|c| c["label"].as_str().unwrap().starts_with("class"))
        );
    }
}

#[test]
fn a_head_trained_for_animal_or_object_answers_and_quantizes() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test) = (dir.path().join("train"), dir.path().join("test"));
    let images = root().join("tests/data/images");
    animal_or_object(&images.join("imagenet-calib"), &train, usize::MAX);
    animal_or_object(&images.join("imagenet-test"), &test, usize::MAX);
    let (out, cache) = (dir.path().join("trained"), dir.path().join("cache"));
    let args = [
        "train-head",
        "models/mobilenet_v2",
        "--data",
        s(&train),
        "--test",
        s(&test),
        "--out",
        s(&out),
        "--cache",
        s(&cache),
    ];
    let r = quantize(&args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // Loss and accuracy per epoch, then the result.
    assert!(r.stdout.contains("epoch   1  train loss "), "{}", r.stdout);
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("head.json")).unwrap()).unwrap();
    let training = &sidecar["training"];
    let accuracy = training["test"]["accuracy"].as_f64().unwrap();
    eprintln!("animal or object, trained on 100 photos: test accuracy {accuracy}");
    assert!(accuracy >= 0.80, "{accuracy}");
    assert_eq!(training["test"]["images"], 100);
    assert_eq!(
        std::fs::read_to_string(out.join("labels.txt")).unwrap(),
        "animal\nobject\n"
    );

    // The runtime's answers are train-head's own.
    let predictions = training["test"]["predictions"].as_array().unwrap();
    let mut pipeline = classify(&out);
    for p in predictions {
        let photo = Path::new(p["file"].as_str().unwrap());
        assert_eq!(
            top1(&mut pipeline, photo),
            p["predicted"].as_str().unwrap(),
            "{photo:?}"
        );
    }
    if let Some(edgebone) = edgebone() {
        let files: Vec<&str> = predictions
            .iter()
            .take(20)
            .map(|p| p["file"].as_str().unwrap())
            .collect();
        let mut args = vec!["classify", "--model", s(&out), "--top", "1"];
        args.extend(&files);
        let r = run(&edgebone, &args);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let reports: Vec<serde_json::Value> = r
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(reports.len(), files.len());
        for (report, p) in reports.iter().zip(predictions) {
            assert_eq!(report["top"][0]["label"], p["predicted"], "{report}");
        }
    }

    // inspect says which layer was trained.
    let r = quantize(&["inspect", s(&out)]);
    assert!(
        r.stdout
            .contains("classifier.1.weight torch.Size([2, 1280])"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("trained by `quantize train-head`"),
        "{}",
        r.stdout
    );

    // A second run reads every embedding from the cache.
    let r = quantize(&args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("embedding: 0 computed, 100 from the cache"),
        "{}",
        r.stderr
    );

    // int8 as any bundle; int8 and float agree on the test photos.
    let flat = dir.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for p in predictions {
        let photo = Path::new(p["file"].as_str().unwrap());
        std::fs::copy(photo, flat.join(photo.file_name().unwrap())).unwrap();
    }
    let int8 = dir.path().join("int8");
    let r = quantize(&[
        "int8",
        s(&out),
        "--calib",
        "tests/data/images/imagenet-calib",
        "--out",
        s(&int8),
        "--eval",
        s(&flat),
        "--json",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let agreement = report["agreement"].as_f64().unwrap();
    eprintln!("int8 against float: agreement {agreement}");
    assert_eq!(report["images"], 100);
    // The 0.97 is for the head trained on 600 photos (0.98 measured by
    // hand, docs/training.md); this one, from 100 photos, is less sure of more
    // photos and agreed on 0.96 when measured.
    assert!(agreement >= 0.95, "{report}");
}

#[test]
fn one_class_is_refused_and_an_unreadable_photo_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    animal_or_object(&root().join("tests/data/images/imagenet-calib"), &data, 4);
    let broken = data.join("animal/broken.jpg");
    std::fs::write(&broken, "not a photo").unwrap();
    let out = dir.path().join("out");
    let args = |data: &Path| {
        quantize(&[
            "train-head",
            "models/mobilenet_v2",
            "--data",
            s(data),
            "--out",
            s(&out),
            "--no-cache",
        ])
    };
    let r = args(&data);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "skipped 1 unreadable image(s): {}",
            broken.display()
        )),
        "{}",
        r.stderr
    );
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("head.json")).unwrap()).unwrap();
    assert_eq!(sidecar["training"]["skipped"][0], s(&broken));
    assert_eq!(sidecar["training"]["classes"]["animal"], 4);

    std::fs::remove_dir_all(data.join("object")).unwrap();
    let r = args(&data);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let errors = r.errors();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(
        errors[0].contains("1 class folder(s) (animal); train-head needs at least two"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}
