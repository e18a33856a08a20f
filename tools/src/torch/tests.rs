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
