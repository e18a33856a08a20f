//! Model bundles that are valid files but hold something edgebone cannot run
//! (issue 16): each is made from a committed bundle by editing its ONNX graph,
//! written with the manifest's sha256 updated so that it reaches the loader, and
//! must be refused at load with one line naming the file and the node, exit
//! code 2 and no panic. Each mutation is refused before tract optimises the
//! graph, so the whole file runs in seconds.

mod common;

use std::path::Path;

use common::{data, edgebone, model, path};
use edgebone::onnx::{self, attr, tensor};
use edgebone::{Bundle, ModelOptions, Pipeline, Task};

type Graph = tract_onnx::pb::GraphProto;

/// A copy of bundle `name` with its graph edited by `edit` and its manifest by
/// `manifest`, the sha256 updated.
fn mutant(
    name: &str,
    edit: impl FnOnce(&mut Graph),
    manifest: impl FnOnce(String) -> String,
) -> tempfile::TempDir {
    let source = model(name);
    let dir = tempfile::tempdir().unwrap();
    let bundle = Bundle::open(&source).unwrap();
    let network = bundle.network_path();
    let mut proto = onnx::load(&network).unwrap();
    edit(onnx::graph_mut(&mut proto));
    let written = dir.path().join(&bundle.manifest.network);
    onnx::save(&proto, &written).unwrap();
    let text = std::fs::read_to_string(source.join("manifest.toml")).unwrap();
    let text = text.replace(
        &bundle.manifest.sha256,
        &edgebone::model::sha256_hex(&written).unwrap(),
    );
    std::fs::write(dir.path().join("manifest.toml"), manifest(text)).unwrap();
    if let Some(labels) = &bundle.manifest.labels {
        std::fs::copy(source.join(labels), dir.path().join(labels)).unwrap();
    }
    dir
}

fn node_named<'g>(graph: &'g mut Graph, name: &str) -> &'g mut tract_onnx::pb::NodeProto {
    graph
        .node
        .iter_mut()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn initializer<'g>(graph: &'g mut Graph, name: &str) -> &'g mut tract_onnx::pb::TensorProto {
    graph
        .initializer
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer {name}"))
}

/// Replaces a float initializer's values (same dims unless given).
fn set_floats(graph: &mut Graph, name: &str, values: &[f32], dims: Option<&[i64]>) {
    let t = initializer(graph, name);
    let dims = dims.map_or(t.dims.clone(), <[i64]>::to_vec);
    *t = tensor::float_tensor(name, &dims, values);
}

/// The loader's error for `dir`, loaded for the bundle's own task.
fn load_error(dir: &Path) -> String {
    let bundle = Bundle::open(dir).unwrap();
    let task = Task::head(&bundle.manifest);
    match Pipeline::load(bundle, task, &ModelOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// One mutation: the bundle it starts from, the edit, the node (or tensor) and
/// the words the error must name.
struct Case {
    what: &'static str,
    bundle: &'static str,
    edit: Box<dyn FnOnce(&mut Graph)>,
    manifest: fn(String) -> String,
    names: &'static str,
    says: &'static str,
}

fn case(
    what: &'static str,
    bundle: &'static str,
    names: &'static str,
    says: &'static str,
    edit: impl FnOnce(&mut Graph) + 'static,
) -> Case {
    Case {
        what,
        bundle,
        edit: Box::new(edit),
        manifest: |m| m,
        names,
        says,
    }
}

const FIRST_CONV: &str = "/features/features.0/features.0.0/Conv";
const DEPTHWISE: &str = "/features/features.1/conv/conv.0/conv.0.0/Conv";
const CLIP_Q: &str = "/features/features.0/features.0.2/Clip_output_0_QuantizeLinear";
const CLIP_SCALE: &str = "/features/features.0/features.0.2/Clip_output_0_scale";
const CLIP_ZERO: &str = "/features/features.0/features.0.2/Clip_output_0_zero_point";
/// The first int8 convolution of the shipped int8 MobileNetV2 (its stem stays
/// float: `quantize int8 --method auto` chose float ends).
const WEIGHT_DQ: &str = "/features/features.1/conv/conv.0/conv.0.0/Conv.weight_DequantizeLinear";
const BIAS_DQ: &str = "/features/features.1/conv/conv.0/conv.0.0/Conv.bias_DequantizeLinear";
const YOLO_CONV: &str = "/model.0/conv/Conv";
const SIGMOID_Q: &str = "/model.0/act/Sigmoid_output_0_QuantizeLinear";
/// The float MobileNetV2's first convolution's weights and bias.
const FLOAT_WEIGHTS: &str = "onnx::Conv_538";
const FLOAT_BIAS: &str = "onnx::Conv_539";

fn set_ints(node: &'static str, name: &'static str, v: Vec<i64>) -> impl FnOnce(&mut Graph) {
    move |g| attr::set(node_named(g, node), attr::ints_attr(name, v))
}

fn set_scale(name: &'static str, value: f32) -> impl FnOnce(&mut Graph) {
    move |g| set_floats(g, name, &[value], None)
}

/// Every mutation class of issue 16 and the others validated at load.
fn cases() -> Vec<Case> {
    let (m8, m, y8) = ("mobilenet_v2_int8", "mobilenet_v2", "yolov5n_int8");
    let tiny_input = |m: String| {
        m.replace("width = 224", "width = 2")
            .replace("height = 224", "height = 2")
            .replace("resize_shorter = 256", "resize_shorter = 2")
    };
    vec![
        // The four that aborted, on the int8 path and in float.
        case(
            "strides of one value",
            m8,
            FIRST_CONV,
            "strides has 1 value(s)",
            set_ints(FIRST_CONV, "strides", vec![2]),
        ),
        case(
            "strides of one value",
            m,
            FIRST_CONV,
            "strides has 1 value(s)",
            set_ints(FIRST_CONV, "strides", vec![2]),
        ),
        case(
            "strides of one value",
            y8,
            YOLO_CONV,
            "strides has 1 value(s)",
            set_ints(YOLO_CONV, "strides", vec![2]),
        ),
        case(
            "pads of two values",
            m8,
            FIRST_CONV,
            "pads has 2 value(s)",
            set_ints(FIRST_CONV, "pads", vec![1, 1]),
        ),
        case(
            "pads of two values",
            m,
            FIRST_CONV,
            "pads has 2 value(s)",
            set_ints(FIRST_CONV, "pads", vec![1, 1]),
        ),
        case(
            "dilations of 1000",
            m8,
            FIRST_CONV,
            "spans 2001 pixels",
            set_ints(FIRST_CONV, "dilations", vec![1000, 1000]),
        ),
        case(
            "dilations of 1000",
            m,
            FIRST_CONV,
            "spans 2001 pixels",
            set_ints(FIRST_CONV, "dilations", vec![1000, 1000]),
        ),
        case(
            "int8 bias shorter than the output channels",
            m8,
            BIAS_DQ,
            "32 scales along axis 0",
            |g| {
                let t = initializer(
                    g,
                    "/features/features.1/conv/conv.0/conv.0.0/Conv.bias_quantized",
                );
                t.dims = vec![16];
                t.raw_data.truncate(16 * 4);
            },
        ),
        case(
            "bias shorter than the output channels",
            m,
            FIRST_CONV,
            "(16 values) for 32 output channels",
            |g| {
                let t = initializer(g, FLOAT_BIAS);
                t.dims = vec![16];
                t.raw_data.truncate(16 * 4);
            },
        ),
        // The five that ran and gave garbage.
        case(
            "activation scale 0",
            m8,
            CLIP_Q,
            "is 0; ONNX requires scales positive",
            set_scale(CLIP_SCALE, 0.0),
        ),
        case(
            "negative activation scale",
            m8,
            CLIP_Q,
            "is -0.02; ONNX requires",
            set_scale(CLIP_SCALE, -0.02),
        ),
        case(
            "NaN activation scale",
            m8,
            CLIP_Q,
            "is NaN; ONNX requires",
            set_scale(CLIP_SCALE, f32::NAN),
        ),
        case(
            "infinite activation scale",
            m8,
            CLIP_Q,
            "is inf; ONNX requires",
            set_scale(CLIP_SCALE, f32::INFINITY),
        ),
        case(
            "NaN SiLU sigmoid scale",
            y8,
            SIGMOID_Q,
            "is NaN; ONNX requires",
            set_scale("/model.0/act/Sigmoid_output_0_scale", f32::NAN),
        ),
        case(
            "weight scale 0",
            m8,
            WEIGHT_DQ,
            "[5] is 0; ONNX requires",
            |g| {
                let name = "/features/features.1/conv/conv.0/conv.0.0/Conv.weight_scale";
                let mut scales = tensor::floats(initializer(g, name)).unwrap();
                scales[5] = 0.0;
                set_floats(g, name, &scales, None);
            },
        ),
        // Arity, ranks, channel counts, zero points.
        case(
            "a convolution without weights",
            m8,
            FIRST_CONV,
            "Conv has 1 input(s)",
            |g| node_named(g, FIRST_CONV).input.truncate(1),
        ),
        case(
            "weights of rank 2",
            m,
            FIRST_CONV,
            "weights of shape [32, 27]",
            |g| initializer(g, FLOAT_WEIGHTS).dims = vec![32, 27],
        ),
        case(
            "output channels not divisible by group",
            m,
            FIRST_CONV,
            "not divisible by group 3",
            |g| attr::set(node_named(g, FIRST_CONV), attr::int_attr("group", 3)),
        ),
        case(
            "weights for other input channels",
            m8,
            DEPTHWISE,
            "input has 32 channels",
            |g| attr::set(node_named(g, DEPTHWISE), attr::int_attr("group", 16)),
        ),
        case(
            "zero point out of its type's range",
            m8,
            CLIP_Q,
            "holds 300, outside INT8",
            |g| {
                let t = initializer(g, CLIP_ZERO);
                t.raw_data.clear();
                t.int32_data = vec![300];
            },
        ),
        case(
            "zero point of a float type",
            m8,
            CLIP_Q,
            "is FLOAT, INT8 or UINT8 expected",
            |g| {
                *initializer(g, CLIP_ZERO) = tensor::float_tensor(CLIP_ZERO, &[], &[0.0]);
            },
        ),
        // A kernel larger than its padded input: a 2x2 input, no padding.
        Case {
            manifest: tiny_input,
            ..case(
                "kernel larger than the padded input",
                m8,
                FIRST_CONV,
                "spans 3 pixels, more than its padded input's 2",
                set_ints(FIRST_CONV, "pads", vec![0; 4]),
            )
        },
        Case {
            manifest: tiny_input,
            ..case(
                "kernel larger than the padded input",
                m,
                FIRST_CONV,
                "spans 3 pixels, more than its padded input's 2",
                set_ints(FIRST_CONV, "pads", vec![0; 4]),
            )
        },
        // A 3x3 depthwise kernel fed to a residual Add (the bundle fuzzer's
        // hang): tract's analysis went on past the Add and the shapes after it
        // grew into expressions that took minutes to simplify.
        case(
            "a weight tensor wired into an Add",
            m,
            "/features/features.6/Add",
            "shapes do not fit together (output 0 would have a size of broadcast((3), (28)))",
            |g| node_named(g, "/features/features.6/Add").input[0] = "onnx::Conv_649".into(),
        ),
        // An output the classifier's decoder cannot read.
        Case {
            manifest: |m| {
                m.replace(
                    "name = \"logits\"",
                    "name = \"/features/features.3/Add_output_0\"",
                )
            },
            ..case(
                "a classifier output that is a feature map",
                m8,
                "/features/features.3/Add_output_0",
                "classifier output must be [1, classes], got [1, 24, 56, 56]",
                |_| {},
            )
        },
    ]
}

/// Each mutation: `Pipeline::load` names the file, the node and the fault, and
/// the binary says the same in one error line, exit code 2, no panic.
#[test]
fn every_malformed_bundle_is_refused_at_load() {
    let bus = data("images/bus.jpg");
    for c in cases() {
        let dir = mutant(c.bundle, c.edit, c.manifest);
        let err = load_error(dir.path());
        let network = Bundle::open(dir.path()).unwrap().network_path();
        let file = if c.says.contains("classifier output") {
            dir.path().to_path_buf()
        } else {
            network
        };
        let context = format!("{} ({}): {err}", c.what, c.bundle);
        assert!(err.contains(path(&file)), "file not named: {context}");
        assert!(err.contains(c.names), "node not named: {context}");
        assert!(err.contains(c.says), "fault not said: {context}");
        assert!(!err.contains('\n'), "several lines: {context}");

        let command = if c.bundle.starts_with("yolo") {
            "detect"
        } else {
            "classify"
        };
        let run = edgebone(&[command, "--model", path(dir.path()), path(&bus)]);
        run.assert_no_panic();
        assert_eq!(run.code, Some(2), "{}: {}", c.what, run.stderr);
        let errors = run.errors();
        assert_eq!(errors.len(), 1, "{}: {}", c.what, run.stderr);
        assert!(
            errors[0].contains(c.names) && errors[0].contains(c.says),
            "{}: {}",
            c.what,
            errors[0]
        );
        assert!(run.stdout.is_empty(), "{}: {}", c.what, run.stdout);
    }
}
