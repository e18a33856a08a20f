use super::write::{self, Entry, Pickle, Stored};
use super::*;

/// Values no two tensors share, exact in fp16 too (multiples of 1/8 below 256).
fn values(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 + salt * 13) % 200) as f32 / 8.0 - 12.5)
        .collect()
}

fn sample(stored: Stored) -> Vec<Entry> {
    let mut transposed = Entry::new("fc.weight", &[3, 5], values(15, 1), stored);
    transposed.transposed = true;
    let mut offset = Entry::new("fc.bias", &[3], values(3, 2), stored);
    offset.offset = 4;
    vec![
        Entry::new("conv1.weight", &[4, 3, 2, 2], values(48, 3), stored),
        Entry::new("bn1.weight", &[4], values(4, 4), stored),
        Entry::new("bn1.num_batches_tracked", &[], vec![12.0], Stored::I64),
        transposed,
        offset,
    ]
}

fn assert_reads_back(bytes: &[u8], entries: &[Entry], format: Format, key: &str) {
    let checkpoint = read_bytes(bytes).unwrap();
    assert_eq!(checkpoint.format, format);
    assert_eq!(checkpoint.key, key);
    let sd = &checkpoint.state_dict;
    let names: Vec<&str> = sd.entries.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, want, "state_dict order");
    for e in entries {
        let t = sd.get(&e.name).unwrap();
        assert_eq!(t.shape, e.shape, "{}", e.name);
        assert_eq!(t.values, e.values, "{}", e.name);
        let dtype = match e.stored {
            Stored::F32 => DType::F32,
            Stored::F16 => DType::F16,
            Stored::I64 => DType::I64,
        };
        assert_eq!(t.dtype, dtype, "{}", e.name);
    }
}

#[test]
fn zip_and_legacy_fp32_and_fp16_read_back_in_order() {
    for stored in [Stored::F32, Stored::F16] {
        let entries = sample(stored);
        assert_reads_back(&write::zip(&entries, None), &entries, Format::Zip, "");
        assert_reads_back(&write::legacy(&entries, None), &entries, Format::Legacy, "");
    }
}

#[test]
fn a_state_dict_under_a_key_is_found() {
    let entries = sample(Stored::F32);
    for key in ["state_dict", "model"] {
        let zip = write::zip(&entries, Some(key));
        assert_reads_back(&zip, &entries, Format::Zip, key);
        let legacy = write::legacy(&entries, Some(key));
        assert_reads_back(&legacy, &entries, Format::Legacy, key);
    }
    let other = write::zip(&entries, Some("weights"));
    let err = format!("{:#}", read_bytes(&other).unwrap_err());
    assert!(err.contains("keys [epoch, weights]"), "{err}");
}

#[test]
fn fp16_values_are_converted_not_reinterpreted() {
    let entries = vec![Entry::new(
        "w",
        &[3],
        vec![0.1, -65504.0, 1e-5],
        Stored::F16,
    )];
    let t = read_bytes(&write::zip(&entries, None)).unwrap().state_dict;
    let want: Vec<f32> = [0.1f32, -65504.0, 1e-5]
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(t.get("w").unwrap().values, want);
}

#[test]
fn parameter_count_skips_running_statistics_and_integers() {
    let entries = vec![
        Entry::new("bn.weight", &[4], vec![1.0; 4], Stored::F32),
        Entry::new("bn.running_mean", &[4], vec![0.0; 4], Stored::F32),
        Entry::new("bn.running_var", &[4], vec![1.0; 4], Stored::F32),
        Entry::new("bn.num_batches_tracked", &[], vec![0.0], Stored::I64),
        Entry::new("fc.weight", &[2, 3], vec![0.5; 6], Stored::F16),
    ];
    let sd = read_bytes(&write::zip(&entries, None)).unwrap().state_dict;
    assert_eq!(sd.len(), 5);
    assert_eq!(sd.parameter_count(), 10);
}

fn legacy_with(pickle: Vec<u8>) -> Vec<u8> {
    let mut bytes = write::legacy_header();
    bytes.extend(pickle);
    bytes
}

#[test]
fn a_global_outside_the_allow_list_is_refused_by_name() {
    let marker = std::env::temp_dir().join(format!("edgebone-pwned-{}", std::process::id()));
    let command = format!("touch {}", marker.display());
    // os.system("touch ...") as a pickle would run it on load in Python.
    let evil = Pickle::default()
        .proto()
        .global("os", "system")
        .op(b'(')
        .str(&command)
        .op(b't')
        .op(b'R')
        .stop();
    for bytes in [
        legacy_with(evil.clone()),
        write::zip_archive("archive", &evil, &[]),
    ] {
        let err = format!("{:#}", read_bytes(&bytes).unwrap_err());
        assert!(err.contains("names os.system"), "{err}");
        assert!(err.contains("nothing was run"), "{err}");
    }
    assert!(!marker.exists());
    // torch's own module, but not a storage or a rebuild function.
    let eval = Pickle::default().proto().global("torch", "load").stop();
    let err = format!("{:#}", read_bytes(&legacy_with(eval)).unwrap_err());
    assert!(err.contains("names torch.load"), "{err}");
    // The same through STACK_GLOBAL (protocol 4).
    let stack = Pickle::default()
        .proto()
        .str("builtins")
        .str("eval")
        .op(0x93)
        .stop();
    let err = format!("{:#}", read_bytes(&legacy_with(stack)).unwrap_err());
    assert!(err.contains("names builtins.eval"), "{err}");
}

#[test]
fn truncated_files_are_errors_not_panics() {
    let entries = sample(Stored::F32);
    for bytes in [write::zip(&entries, None), write::legacy(&entries, None)] {
        // Every cut, from inside the header to the last byte.
        for cut in (1..bytes.len()).step_by(7) {
            let err = read_bytes(&bytes[..cut]).unwrap_err();
            assert!(!format!("{err:#}").is_empty());
        }
    }
    let zip = write::zip(&entries, None);
    let err = format!("{:#}", read_bytes(&zip[..zip.len() / 2]).unwrap_err());
    assert!(err.contains("truncated or corrupt zip"), "{err}");
    let err = format!("{:#}", read_bytes(b"hello").unwrap_err());
    assert!(err.contains("not a PyTorch checkpoint"), "{err}");
}

#[test]
fn a_view_past_its_storage_is_an_error() {
    // size 10 over a storage of 4 floats.
    let pkl = Pickle::default()
        .proto()
        .op(b'}')
        .str("w")
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b'(')
        .op(b'(')
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(4)
        .op(b't')
        .op(b'Q')
        .int(0)
        .ints_tuple(&[10])
        .ints_tuple(&[1])
        .op(b't')
        .op(b'R')
        .op(b's')
        .stop();
    let zip = write::zip_archive("a", &pkl, &[("0".into(), vec![0; 16])]);
    let err = format!("{:#}", read_bytes(&zip).unwrap_err());
    assert!(err.contains("w: size [10]"), "{err}");
}

/// PyTorch 0.2/0.3 legacy files (as torchvision's `resnet18-5c106cde.pth`):
/// `_rebuild_tensor` without requires_grad, Python 2 byte-string keys, and a
/// tensor on a view of a larger storage (view_metadata).
#[test]
fn old_legacy_files_with_rebuild_tensor_and_storage_views_read() {
    let short = |p: Pickle, s: &str| {
        let mut p = p.op(b'U');
        p.0.push(s.len() as u8);
        p.0.extend(s.bytes());
        p
    };
    let mut p = Pickle::default()
        .proto()
        .global("collections", "OrderedDict")
        .op(b')')
        .op(b'R')
        .op(b'(');
    p = short(p, "fc.bias");
    p = p
        .global("torch._utils", "_rebuild_tensor")
        .op(b'(')
        .op(b'(');
    p = short(p, "storage");
    p = p.global("torch", "FloatStorage");
    p = short(p, "140");
    p = short(p, "cpu");
    // root storage of 6 floats; the tensor's storage is the view [2, 5).
    p = p.int(6).op(b'(');
    p = short(p, "141");
    p = p.int(2).int(3).op(b't').op(b't').op(b'Q');
    p = p.int(1).ints_tuple(&[2]).ints_tuple(&[1]).op(b't').op(b'R');
    let object = p.op(b'u').stop();
    let mut bytes = write::legacy_header();
    bytes.extend(object);
    let keys = short(Pickle::default().proto().op(b'('), "140").op(b'l');
    bytes.extend(keys.stop());
    bytes.extend(6u64.to_le_bytes());
    for v in [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0] {
        bytes.extend(v.to_le_bytes());
    }
    let sd = read_bytes(&bytes).unwrap().state_dict;
    // view offset 2, tensor offset 1: elements 3 and 4 of the root storage.
    assert_eq!(sd.get("fc.bias").unwrap().values, [3.0, 4.0]);
    assert_eq!(sd.get("fc.bias").unwrap().shape, [2]);
}

/// Pickles built to exhaust the reader: deep nesting, a list holding itself,
/// sizes whose product overflows. Each is an error (or read), never a crash.
#[test]
fn hostile_structures_are_refused_or_read_without_recursion() {
    let mut deep = Pickle::default().proto().op(b')');
    for _ in 0..100_000 {
        deep = deep.op(0x85); // TUPLE1
    }
    let err = format!("{:#}", read_bytes(&legacy_with(deep.stop())).unwrap_err());
    assert!(err.contains("nested deeper than"), "{err}");

    // l = []; l.append(l); {"w": l}: no state_dict, and no endless walk.
    let cyclic = Pickle::default()
        .proto()
        .op(b'}')
        .str("w")
        .op(b']')
        .op(b'q')
        .op(0)
        .op(b'h')
        .op(0)
        .op(b'a')
        .op(b's')
        .stop();
    let zip = write::zip_archive("a", &cyclic, &[]);
    let err = format!("{:#}", read_bytes(&zip).unwrap_err());
    assert!(err.contains("no state_dict"), "{err}");

    let huge = Pickle::default()
        .proto()
        .op(b'}')
        .str("w")
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(b'(')
        .op(b'(')
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(4)
        .op(b't')
        .op(b'Q')
        .int(0)
        .ints_tuple(&[1 << 30, 1 << 30, 1 << 30])
        .ints_tuple(&[0, 0, 0])
        .op(b't')
        .op(b'R')
        .op(b's')
        .stop();
    let zip = write::zip_archive("a", &huge, &[("0".into(), vec![0; 16])]);
    let err = format!("{:#}", read_bytes(&zip).unwrap_err());
    assert!(err.contains("do not fit a storage of 4 elements"), "{err}");
}

/// A whole pickled model as Ultralytics saves one: `{"model": Model, "ema": None}`,
/// `Model` holding `model.0` (a Conv of Conv2d + BatchNorm2d), its yaml, names
/// and a stride tensor. `extra` is pickled as one more attribute of `Model`.
fn pickled_model(extra: Option<Pickle>) -> Vec<u8> {
    use write::Module;
    let mut storages = Vec::new();
    let mut t = |name: &str, shape: &[usize], stored: Stored, salt: usize| {
        let n = shape.iter().product();
        let e = Entry::new(name, shape, values(n, salt), stored);
        let key = storages.len().to_string();
        let (p, bytes) = write::tensor_fragment(&e, &key);
        storages.push((key, bytes));
        p
    };
    let conv2d = Module {
        class: ("torch.nn.modules.conv", "Conv2d"),
        parameters: vec![
            ("weight", t("w", &[4, 3, 1, 1], Stored::F16, 1)),
            ("bias", Pickle::default().op(b'N')),
        ],
        buffers: vec![],
        modules: vec![],
        attributes: vec![("kernel_size", Pickle::default().ints_tuple(&[1, 1]))],
    };
    let bn = Module {
        class: ("torch.nn.modules.batchnorm", "BatchNorm2d"),
        parameters: vec![
            ("weight", t("g", &[4], Stored::F16, 2)),
            ("bias", t("b", &[4], Stored::F16, 3)),
        ],
        buffers: vec![
            ("running_mean", t("m", &[4], Stored::F16, 4)),
            ("running_var", t("v", &[4], Stored::F16, 5)),
            ("num_batches_tracked", t("n", &[], Stored::I64, 6)),
        ],
        modules: vec![],
        attributes: vec![(
            "eps",
            Pickle::default().op(b'G').raw(&0.001f64.to_be_bytes()),
        )],
    };
    let conv = Module {
        class: ("models.common", "Conv"),
        parameters: vec![],
        buffers: vec![],
        modules: vec![("conv", conv2d), ("bn", bn)],
        attributes: vec![],
    };
    let sequential = Module {
        class: ("torch.nn.modules.container", "Sequential"),
        parameters: vec![],
        buffers: vec![],
        modules: vec![("0", conv)],
        attributes: vec![],
    };
    let yaml = Pickle::default()
        .op(b'}')
        .op(b'(')
        .str("nc")
        .int(2)
        .str("depth_multiple")
        .op(b'G')
        .raw(&0.33f64.to_be_bytes())
        .op(b'u');
    let names = Pickle::default().op(b'(').str("cat").str("dog").op(b'l');
    let mut attributes = vec![
        ("yaml", yaml),
        ("names", names),
        ("stride", t("s", &[3], Stored::F32, 7)),
    ];
    if let Some(extra) = extra {
        attributes.push(("extra", extra));
    }
    let model = Module {
        class: ("models.yolo", "Model"),
        parameters: vec![],
        buffers: vec![],
        modules: vec![("model", sequential)],
        attributes,
    };
    let mut p = Pickle::default()
        .proto()
        .op(b'}')
        .op(b'(')
        .str("epoch")
        .int(-1)
        .str("model");
    p.0.extend(model.pickle().0);
    let pkl = p.str("ema").op(b'N').op(b'u').stop();
    write::zip_archive("archive", &pkl, &storages)
}

#[test]
fn a_pickled_model_reads_as_data_with_its_state_dict_in_torch_order() {
    let checkpoint = read_bytes(&pickled_model(None)).unwrap();
    assert_eq!(checkpoint.key, "model");
    let sd = &checkpoint.state_dict;
    let names: Vec<&str> = sd.entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "model.0.conv.weight",
            "model.0.bn.weight",
            "model.0.bn.bias",
            "model.0.bn.running_mean",
            "model.0.bn.running_var",
            "model.0.bn.num_batches_tracked",
        ]
    );
    let w = sd.get("model.0.conv.weight").unwrap();
    assert_eq!(w.dtype, DType::F16);
    assert_eq!(w.values, values(12, 1));
    // Parameters as the module says: conv weight 12, BN weight and bias 8.
    assert_eq!(sd.parameter_count(), 20);
    let model = checkpoint.model.unwrap();
    assert_eq!(model.class, "models.yolo.Model");
    assert_eq!(model.attributes["yaml"]["nc"], 2);
    assert_eq!(model.attributes["yaml"]["depth_multiple"], 0.33);
    assert_eq!(model.attributes["names"], serde_json::json!(["cat", "dog"]));
    assert_eq!(model.tensor("stride").unwrap().values, values(3, 7));
    let bn = model.get("model.0.bn").unwrap();
    assert_eq!(bn.class, "torch.nn.modules.batchnorm.BatchNorm2d");
    assert_eq!(bn.attributes["eps"], 0.001);
    assert_eq!(
        model.get("model.0.conv").unwrap().attributes["kernel_size"],
        serde_json::json!([1, 1])
    );
}

#[test]
fn a_pickled_model_naming_a_global_outside_the_allow_list_is_refused() {
    let marker = std::env::temp_dir().join(format!("edgebone-popen-{}", std::process::id()));
    let cases = [
        // subprocess.Popen(["touch", marker]) hidden in a model attribute.
        (
            Pickle::default()
                .global("subprocess", "Popen")
                .op(b'(')
                .op(b'(')
                .str("touch")
                .str(marker.to_str().unwrap())
                .op(b'l')
                .op(b't')
                .op(b'R'),
            "names subprocess.Popen",
        ),
        // A function of the model package, not a class.
        (
            Pickle::default().global("models.common", "autopad"),
            "names models.common.autopad",
        ),
        // Another package's model class.
        (
            Pickle::default()
                .global("ultralytics.nn.tasks", "DetectionModel")
                .op(b')')
                .op(0x81),
            "names ultralytics.nn.tasks.DetectionModel",
        ),
        // An allowed class, but called rather than rebuilt.
        (
            Pickle::default()
                .global("models.common", "Conv")
                .op(b')')
                .op(b'R'),
            "a call of models.common.Conv",
        ),
    ];
    for (extra, want) in cases {
        let err = format!("{:#}", read_bytes(&pickled_model(Some(extra))).unwrap_err());
        assert!(err.contains(want), "{err}");
    }
    assert!(!marker.exists());
}

/// What the `torch` fuzz target found (fuzz/crashes/torch): a checkpoint whose
/// tensors name one storage with different sizes read past the storage's bytes.
#[test]
fn the_fuzzed_checkpoints_are_errors_not_panics() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/crashes/torch");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(super::read_bytes(&bytes).is_err());
        seen += 1;
    }
    assert!(seen >= 3, "{seen} crash files");
}
