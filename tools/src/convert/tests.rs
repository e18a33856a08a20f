//! Converted graphs against PyTorch's own outputs: the shared "formula"
//! state_dicts (generated here, no weights stored) and the mis-shaped or foreign
//! state_dicts a user can hand `convert`.

use std::path::{Path, PathBuf};

use edgebone::decode::f32_values;
use edgebone::model::Outputs;
use edgebone::{Bundle, Model, ModelOptions};
use serde_json::Value;
use tract_onnx::prelude::{IntoTValue, TValue, Tensor};

use super::{Arch, from_formula, from_state_dict, write_bundle};
use crate::torch::{DType, StateDict, Tensor as TorchTensor};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/golden")
}

pub fn formula_dir() -> PathBuf {
    data().join("formula")
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn run(bundle: &Bundle, outputs: Outputs, input: &[f32]) -> Vec<TValue> {
    let mut model = Model::load(bundle, &ModelOptions::default(), outputs).unwrap();
    let x = Tensor::from_shape(&[1, 3, 224, 224], input).unwrap();
    let y = model.run(x.into_tvalue()).unwrap();
    y.into_iter().collect()
}

/// The formula state_dict of `arch` converted, written as a bundle and run by
/// the runtime on the golden photo: logits within 1e-4 relative L2 of PyTorch's,
/// every tap of PyTorch's shape and sum.
fn check_formula_golden(arch: Arch) {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(formula_dir().join("index.json")).unwrap())
            .unwrap();
    let golden = &index["models"][arch.name()];
    let converted = from_formula(arch, None).unwrap();
    let params: i64 = converted
        .model
        .graph
        .iter()
        .flat_map(|g| &g.initializer)
        .filter(|t| !t.name.ends_with("running_mean") && !t.name.ends_with("running_var"))
        .map(|t| t.dims.iter().product::<i64>())
        .sum();
    assert_eq!(
        params,
        golden["params"].as_i64().unwrap(),
        "parameter count"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = write_bundle(
        arch,
        &converted,
        &dir.path().join(arch.name()),
        "the formula",
    )
    .unwrap();
    let bundle = Bundle::open(&out).unwrap();
    let input = read_f32(&data().join("mobilenet_v2.input0.f32"));

    let logits = run(&bundle, Outputs::Head, &input);
    let logits = f32_values(&logits[0]).unwrap();
    let want = read_f32(&formula_dir().join(golden["logits"].as_str().unwrap()));
    let err: f64 = logits
        .iter()
        .zip(&want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
    eprintln!("{}: logits relative L2 error {:e}", arch.name(), err / norm);
    assert!(err / norm <= 1e-4, "{}: {}", arch.name(), err / norm);

    let maps = run(&bundle, Outputs::Taps, &input);
    let taps = golden["taps"].as_object().unwrap();
    assert_eq!(maps.len(), taps.len());
    for (tap, map) in bundle.manifest.taps.iter().zip(&maps) {
        // The shipped ResNet bundle calls the maxpool output "stem".
        let key = if tap.name == "stem" {
            "maxpool"
        } else {
            &tap.name
        };
        let want = &taps[key];
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(map.shape(), shape, "{} {key}", arch.name());
        let values = f32_values(map).unwrap();
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let l2: f64 = values
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let (want_sum, want_l2) = (want["sum"].as_f64().unwrap(), want["l2"].as_f64().unwrap());
        // A sum can nearly cancel; its error is measured against the map's size.
        let sum_err = (sum - want_sum).abs() / want_l2.max(want_sum.abs());
        let l2_err = (l2 - want_l2).abs() / want_l2;
        eprintln!(
            "{} {key}: sum {sum:.3} (golden {want_sum:.3}, error {sum_err:e}), L2 error {l2_err:e}",
            arch.name()
        );
        assert!(sum_err <= 1e-4 && l2_err <= 1e-4, "{} {key}", arch.name());
    }
}

#[test]
fn resnet18_formula_matches_pytorch() {
    check_formula_golden(Arch::Resnet18);
}

#[test]
fn resnet50_formula_matches_pytorch() {
    check_formula_golden(Arch::Resnet50);
}

#[test]
fn mobilenet_v2_formula_matches_pytorch() {
    check_formula_golden(Arch::MobilenetV2);
}

#[test]
fn mobilenet_v3_large_formula_matches_pytorch() {
    check_formula_golden(Arch::MobilenetV3Large);
}

#[test]
fn efficientnet_b0_formula_matches_pytorch() {
    check_formula_golden(Arch::EfficientnetB0);
}

/// The largest: 138 M parameters, 2.1 GB peak memory and 8 s on its own here.
#[test]
fn vgg16_formula_matches_pytorch() {
    check_formula_golden(Arch::Vgg16);
}

#[test]
fn densenet121_formula_matches_pytorch() {
    check_formula_golden(Arch::Densenet121);
}

/// The architectures without a shared golden: torchvision's documented sizes
/// (ResNet-34 21,797,672 parameters, MobileNetV3-Small 2,542,856) and the
/// pyramid's shapes when the runtime runs them.
#[test]
fn architectures_without_a_golden_have_torchvision_sizes_and_pyramids() {
    let cases: [(Arch, i64, [[usize; 4]; 4]); 2] = [
        (
            Arch::Resnet34,
            21_797_672,
            [
                [1, 64, 56, 56],
                [1, 128, 28, 28],
                [1, 256, 14, 14],
                [1, 512, 7, 7],
            ],
        ),
        (
            Arch::MobilenetV3Small,
            2_542_856,
            [
                [1, 16, 56, 56],
                [1, 24, 28, 28],
                [1, 48, 14, 14],
                [1, 576, 7, 7],
            ],
        ),
    ];
    for (arch, want_params, want_shapes) in cases {
        let converted = from_formula(arch, Some(7)).unwrap();
        let graph = converted.model.graph.as_ref().unwrap();
        let params: i64 = graph
            .initializer
            .iter()
            .filter(|t| !t.name.ends_with("running_mean") && !t.name.ends_with("running_var"))
            .map(|t| t.dims.iter().product::<i64>())
            .sum();
        assert_eq!(params, want_params, "{}", arch.name());
        let dir = tempfile::tempdir().unwrap();
        let out = write_bundle(arch, &converted, &dir.path().join("b"), "seed 7").unwrap();
        let bundle = Bundle::open(&out).unwrap();
        let maps = run(&bundle, Outputs::Taps, &vec![0.5; 3 * 224 * 224]);
        // ResNet's first tap is the stem at stride 4, then layer1..layer4.
        let maps = &maps[maps.len() - 4..];
        let shapes: Vec<Vec<usize>> = maps.iter().map(|m| m.shape().to_vec()).collect();
        assert_eq!(shapes, want_shapes.map(|s| s.to_vec()), "{}", arch.name());
        let strides: Vec<u32> = bundle.manifest.taps.iter().map(|t| t.stride).collect();
        assert_eq!(
            &strides[strides.len() - 4..],
            [4, 8, 16, 32],
            "{}",
            arch.name()
        );
        for map in maps {
            assert!(f32_values(map).unwrap().iter().all(|v| v.is_finite()));
        }
    }
}

/// A state_dict holding what the formula gives `arch`, as a checkpoint would.
fn formula_state_dict(arch: Arch) -> StateDict {
    let converted = from_formula(arch, None).unwrap();
    let mut sd = StateDict::default();
    for t in &converted.model.graph.as_ref().unwrap().initializer {
        let values = edgebone::onnx::tensor::floats(t).unwrap();
        let shape = t.dims.iter().map(|&d| d as usize).collect();
        sd.push(
            t.name.clone(),
            TorchTensor {
                dtype: DType::F32,
                shape,
                values,
            },
        );
    }
    sd
}

#[test]
fn a_checkpoint_converts_to_the_same_graph_as_its_weights() {
    let sd = formula_state_dict(Arch::Resnet18);
    let from_checkpoint = from_state_dict(Arch::Resnet18, &sd).unwrap();
    assert_eq!(
        from_checkpoint.model,
        from_formula(Arch::Resnet18, None).unwrap().model
    );
    assert_eq!(from_checkpoint.classes, 1000);
}

#[test]
fn mis_shaped_missing_and_foreign_tensors_are_named() {
    let mut sd = formula_state_dict(Arch::Resnet18);
    let i = sd
        .entries
        .iter()
        .position(|(n, _)| n == "layer2.0.conv1.weight")
        .unwrap();
    sd.entries[i].1.shape = vec![128, 64, 1, 1];
    sd.entries[i].1.values.truncate(128 * 64);
    let sd = rebuilt(sd.entries);
    let err = format!("{:#}", from_state_dict(Arch::Resnet18, &sd).unwrap_err());
    assert_eq!(
        err,
        "tensor layer2.0.conv1.weight: the checkpoint has torch.Size([128, 64, 1, 1]) \
         but resnet18 expects torch.Size([128, 64, 3, 3])"
    );

    let mut entries = formula_state_dict(Arch::Resnet18).entries;
    entries.retain(|(n, _)| n != "layer3.1.bn2.running_var");
    let err = format!(
        "{:#}",
        from_state_dict(Arch::Resnet18, &rebuilt(entries)).unwrap_err()
    );
    assert!(err.starts_with("tensor layer3.1.bn2.running_var: resnet18 expects torch.Size([256]) but the checkpoint has no such tensor"), "{err}");

    // ResNet-34's weights under --arch resnet18: layer1.2 is one block too many.
    let sd = formula_state_dict(Arch::Resnet34);
    let err = format!("{:#}", from_state_dict(Arch::Resnet18, &sd).unwrap_err());
    assert!(
        err.starts_with(
            "tensor layer1.2.conv1.weight torch.Size([64, 64, 3, 3]): the checkpoint has it"
        ),
        "{err}"
    );

    // A MobileNetV2 state_dict as ResNet-50.
    let sd = formula_state_dict(Arch::MobilenetV2);
    let err = format!("{:#}", from_state_dict(Arch::Resnet50, &sd).unwrap_err());
    let want = format!(
        "tensor conv1.weight: resnet50 expects torch.Size([64, 3, 7, 7]) but the checkpoint \
         has no such tensor (it has {}, the first is features.0.0.weight",
        sd.len()
    );
    assert!(err.starts_with(&want), "{err}");
}

fn rebuilt(entries: Vec<(String, TorchTensor)>) -> StateDict {
    let mut sd = StateDict::default();
    for (n, t) in entries {
        sd.push(n, t);
    }
    sd
}

/// A whole fp16 checkpoint, nested under `model` in a zip and bare in a legacy
/// file, converts to the graph of its f32-widened weights.
#[test]
fn an_fp16_checkpoint_converts_with_its_weights_widened() {
    use crate::torch::write::{self, Entry, Stored};
    let sd = formula_state_dict(Arch::MobilenetV2);
    let entries: Vec<Entry> = sd
        .entries
        .iter()
        .map(|(n, t)| Entry::new(n, &t.shape, t.values.clone(), Stored::F16))
        .collect();
    let widened: Vec<Vec<f32>> = sd
        .entries
        .iter()
        .map(|(_, t)| {
            t.values
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect()
        })
        .collect();
    for bytes in [
        write::zip(&entries, Some("model")),
        write::legacy(&entries, None),
    ] {
        let checkpoint = crate::torch::read_bytes(&bytes).unwrap();
        let converted = from_state_dict(Arch::MobilenetV2, &checkpoint.state_dict).unwrap();
        let graph = converted.model.graph.unwrap();
        assert_eq!(graph.initializer.len(), widened.len());
        for (t, want) in graph.initializer.iter().zip(&widened) {
            assert_eq!(
                &edgebone::onnx::tensor::floats(t).unwrap(),
                want,
                "{}",
                t.name
            );
        }
    }
}
