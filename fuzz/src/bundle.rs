//! Structure-aware mutation of the committed model bundles: the fuzzer's bytes
//! pick a bundle, optionally cut its graph after a few nodes (so a load takes
//! milliseconds, not a second), and edit nodes, attributes, initializers and the
//! manifest; the result is written as a real bundle (sha256 updated) and loaded
//! and run the way `edgebone` does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use edgebone::onnx::{self, attr};
use prost::Message;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, TensorProto, ValueInfoProto};

/// Bundles to start from: both int8 files first (the rewrite and the integer
/// kernels are the most hand-written code), then their float originals.
pub const MODELS: [&str; 4] = [
    "mobilenet_v2_int8",
    "yolov5n_int8",
    "mobilenet_v2",
    "yolov5n",
];

/// Attribute names the mutations set or drop: those the rewrites and tract read.
const ATTRS: [&str; 17] = [
    "strides",
    "pads",
    "dilations",
    "kernel_shape",
    "group",
    "axis",
    "auto_pad",
    "min",
    "max",
    "alpha",
    "beta",
    "mode",
    "axes",
    "perm",
    "keepdims",
    "to",
    "epsilon",
];

/// Operator types a node may be turned into.
const OPS: [&str; 19] = [
    "Conv",
    "QuantizeLinear",
    "DequantizeLinear",
    "Add",
    "Mul",
    "Clip",
    "Relu",
    "Sigmoid",
    "MaxPool",
    "Concat",
    "Resize",
    "Reshape",
    "Transpose",
    "GlobalAveragePool",
    "Gemm",
    "Flatten",
    "Identity",
    "Split",
    "Slice",
];

pub struct Base {
    pub name: &'static str,
    pub dir: PathBuf,
    pub manifest: String,
    pub proto: ModelProto,
}

/// The committed bundles, parsed once per process.
pub fn bases() -> &'static [Base] {
    static BASES: OnceLock<Vec<Base>> = OnceLock::new();
    BASES.get_or_init(|| {
        MODELS
            .iter()
            .map(|&name| {
                let dir = crate::repo().join("models").join(name);
                let bundle = edgebone::Bundle::open(&dir).expect("a committed bundle opens");
                let proto = onnx::load(&bundle.network_path()).expect("a committed network");
                let manifest = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
                Base {
                    name,
                    dir,
                    manifest,
                    proto,
                }
            })
            .collect()
    })
}

#[derive(Arbitrary, Debug)]
pub struct Plan {
    pub model: u8,
    /// Keep only the first nodes (then run with the last one's output as the
    /// head); `None` keeps the whole graph and runs it through `Pipeline`.
    pub cut: Option<u8>,
    /// The input side: 32, 64 or 96 pixels.
    pub side: u8,
    pub features: bool,
    pub mutations: Vec<Mutation>,
    pub manifest: Vec<ManifestEdit>,
}

#[derive(Arbitrary, Debug)]
pub enum Mutation {
    Ints {
        node: u16,
        attr: u8,
        values: Vec<i8>,
    },
    Int {
        node: u16,
        attr: u8,
        value: i64,
    },
    Float {
        node: u16,
        attr: u8,
        value: f32,
    },
    Text {
        node: u16,
        attr: u8,
        value: Vec<u8>,
    },
    DropAttr {
        node: u16,
        attr: u8,
    },
    /// Reads another tensor (a node output or an initializer), or `""`.
    Rewire {
        node: u16,
        slot: u8,
        tensor: Option<u16>,
    },
    KeepInputs {
        node: u16,
        keep: u8,
    },
    Op {
        node: u16,
        op: u8,
    },
    DropNode {
        node: u16,
    },
    Dims {
        init: u16,
        dims: Vec<i8>,
    },
    FloatAt {
        init: u16,
        at: u16,
        value: f32,
    },
    IntAt {
        init: u16,
        at: u16,
        value: i64,
    },
    DataType {
        init: u16,
        data_type: u8,
    },
    KeepRaw {
        init: u16,
        keep: u16,
    },
}

#[derive(Arbitrary, Debug)]
pub enum ManifestEdit {
    OutputName(Option<u16>),
    Decoding(bool),
    Fit(u8),
    Interpolation(bool),
    Scale(f32),
    Mean(u8, f32),
    Std(u8, f32),
    ResizeShorter(u16),
    Tap { tensor: u16, stride: u8 },
    NoTaps,
    Conf(f32),
    Iou(f32),
    PadValue(u8),
    Size(u16, u16),
}

/// A mutated bundle written to `dir`, ready for `Bundle::open`.
pub struct Mutant {
    pub cut: bool,
    pub input_size: (u32, u32),
    pub features: bool,
}

pub fn write(plan: &Plan, dir: &Path) -> Mutant {
    let base = &bases()[plan.model as usize % MODELS.len()];
    let mut proto = base.proto.clone();
    let graph = onnx::graph_mut(&mut proto);
    let head = plan.cut.map(|k| cut(graph, k as usize));
    for m in plan.mutations.iter().take(8) {
        mutate(graph, m);
    }
    let network = dir.join("network.onnx");
    std::fs::write(&network, proto.encode_to_vec()).unwrap();
    let sha = edgebone::model::sha256_hex(&network).unwrap();
    let mut doc: toml_edit::DocumentMut = base.manifest.parse().unwrap();
    doc["network"] = toml_edit::value("network.onnx");
    doc["sha256"] = toml_edit::value(sha);
    if let Some(labels) = doc.get("labels").and_then(|l| l.as_str()) {
        let labels = labels.to_string();
        if !dir.join(&labels).exists() {
            std::fs::copy(base.dir.join(&labels), dir.join(&labels)).unwrap();
        }
    }
    if let Some(head) = &head {
        doc["output"]["name"] = toml_edit::value(head.as_str());
        doc["output"]["decoding"] = toml_edit::value("classifier");
    }
    let names = tensor_names(onnx::graph_mut(&mut proto));
    for edit in plan.manifest.iter().take(6) {
        edit_manifest(&mut doc, edit, &names);
    }
    std::fs::write(dir.join("manifest.toml"), doc.to_string()).unwrap();
    let side = 32 * (1 + plan.side as u32 % 3);
    Mutant {
        cut: head.is_some(),
        input_size: (side, side),
        features: plan.features,
    }
}

/// [`cut`], for the seed corpus of raw networks.
pub fn cut_for_seed(graph: &mut GraphProto, k: usize) -> String {
    cut(graph, k - 1)
}

/// Keeps the first `k` nodes (at least one); their last output becomes the
/// graph's only output. Returns its name.
fn cut(graph: &mut GraphProto, k: usize) -> String {
    let k = 1 + k % graph.node.len().max(1);
    graph.node.truncate(k);
    let head = graph
        .node
        .last()
        .and_then(|n| n.output.first())
        .cloned()
        .unwrap_or_default();
    graph.output = vec![ValueInfoProto {
        name: head.clone(),
        ..Default::default()
    }];
    let mut used: HashSet<String> = graph.node.iter().flat_map(|n| n.input.clone()).collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    // The image input stays the first, as `Model::load` sets its shape by position.
    used.extend(graph.input.first().map(|v| v.name.clone()));
    graph.input.retain(|v| used.contains(&v.name));
    head
}

fn tensor_names(graph: &GraphProto) -> Vec<String> {
    graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(graph.initializer.iter().map(|t| t.name.clone()))
        .collect()
}

fn pick<T>(items: &mut [T], i: u16) -> Option<&mut T> {
    let n = items.len();
    (n > 0).then(|| &mut items[i as usize % n])
}

fn mutate(graph: &mut GraphProto, m: &Mutation) {
    let names = tensor_names(graph);
    let attr_name = |a: u8| ATTRS[a as usize % ATTRS.len()];
    match m {
        Mutation::Ints {
            node,
            attr: a,
            values,
        } => {
            if let Some(n) = pick(&mut graph.node, *node) {
                let v = values.iter().take(8).map(|&v| v as i64).collect();
                attr::set(n, attr::ints_attr(attr_name(*a), v));
            }
        }
        Mutation::Int {
            node,
            attr: a,
            value,
        } => {
            if let Some(n) = pick(&mut graph.node, *node) {
                attr::set(n, attr::int_attr(attr_name(*a), *value));
            }
        }
        Mutation::Float {
            node,
            attr: a,
            value,
        } => {
            if let Some(n) = pick(&mut graph.node, *node) {
                attr::set(n, attr::float_attr(attr_name(*a), *value));
            }
        }
        Mutation::Text {
            node,
            attr: a,
            value,
        } => {
            if let Some(n) = pick(&mut graph.node, *node) {
                let text = AttributeProto {
                    name: attr_name(*a).into(),
                    r#type: tract_onnx::pb::attribute_proto::AttributeType::String as i32,
                    s: value.iter().take(16).copied().collect(),
                    ..Default::default()
                };
                attr::set(n, text);
            }
        }
        Mutation::DropAttr { node, attr: a } => {
            if let Some(n) = pick(&mut graph.node, *node) {
                n.attribute.retain(|x| x.name != attr_name(*a));
            }
        }
        Mutation::Rewire { node, slot, tensor } => {
            let name = match tensor {
                Some(t) if !names.is_empty() => names[*t as usize % names.len()].clone(),
                _ => String::new(),
            };
            if let Some(n) = pick(&mut graph.node, *node) {
                match n.input.get_mut(*slot as usize % 4) {
                    Some(input) => *input = name,
                    None => n.input.push(name),
                }
            }
        }
        Mutation::KeepInputs { node, keep } => {
            if let Some(n) = pick(&mut graph.node, *node) {
                n.input.truncate(*keep as usize % 4);
            }
        }
        Mutation::Op { node, op } => {
            if let Some(n) = pick(&mut graph.node, *node) {
                n.op_type = OPS[*op as usize % OPS.len()].into();
            }
        }
        Mutation::DropNode { node } => {
            if !graph.node.is_empty() {
                let i = *node as usize % graph.node.len();
                graph.node.remove(i);
            }
        }
        Mutation::Dims { init, dims } => {
            if let Some(t) = pick(&mut graph.initializer, *init) {
                t.dims = dims.iter().take(6).map(|&d| d as i64).collect();
            }
        }
        Mutation::FloatAt { init, at, value } => {
            if let Some(t) = pick(&mut graph.initializer, *init) {
                set_float(t, *at as usize, *value);
            }
        }
        Mutation::IntAt { init, at, value } => {
            if let Some(t) = pick(&mut graph.initializer, *init) {
                set_int(t, *at as usize, *value);
            }
        }
        Mutation::DataType { init, data_type } => {
            if let Some(t) = pick(&mut graph.initializer, *init) {
                t.data_type = (*data_type % 17) as i32;
            }
        }
        Mutation::KeepRaw { init, keep } => {
            if let Some(t) = pick(&mut graph.initializer, *init) {
                let keep = (*keep as usize).min(t.raw_data.len());
                t.raw_data.truncate(keep);
            }
        }
    }
}

/// Sets one value of a float constant, in whichever encoding it is stored.
fn set_float(t: &mut TensorProto, at: usize, value: f32) {
    if !t.float_data.is_empty() {
        let n = t.float_data.len();
        t.float_data[at % n] = value;
    } else if t.raw_data.len() >= 4 {
        let i = at % (t.raw_data.len() / 4) * 4;
        t.raw_data[i..i + 4].copy_from_slice(&value.to_le_bytes());
    }
}

/// Sets one value of an integer constant (int8, uint8, int32, int64).
fn set_int(t: &mut TensorProto, at: usize, value: i64) {
    if !t.int32_data.is_empty() {
        let n = t.int32_data.len();
        t.int32_data[at % n] = value as i32;
    } else if !t.int64_data.is_empty() {
        let n = t.int64_data.len();
        t.int64_data[at % n] = value;
    } else if !t.raw_data.is_empty() {
        let n = t.raw_data.len();
        t.raw_data[at % n] = value as u8;
    }
}

fn edit_manifest(doc: &mut toml_edit::DocumentMut, edit: &ManifestEdit, names: &[String]) {
    use toml_edit::value;
    let name = |i: u16| names.get(i as usize % names.len().max(1)).cloned();
    match edit {
        ManifestEdit::OutputName(i) => match i.and_then(name) {
            Some(n) => doc["output"]["name"] = value(n),
            None => {
                doc["output"].as_table_like_mut().map(|t| t.remove("name"));
            }
        },
        ManifestEdit::Decoding(yolo) => {
            doc["output"]["decoding"] = value(if *yolo { "yolov5" } else { "classifier" })
        }
        ManifestEdit::Fit(f) => {
            let fit = ["center-crop", "letterbox", "stretch"][*f as usize % 3];
            doc["input"]["fit"] = value(fit);
        }
        ManifestEdit::Interpolation(b) => {
            let i = if *b { "bilinear" } else { "bilinear-antialias" };
            doc["input"]["interpolation"] = value(i);
        }
        ManifestEdit::Scale(s) => doc["input"]["scale"] = value(*s as f64),
        ManifestEdit::Mean(c, v) | ManifestEdit::Std(c, v) => {
            let key = if matches!(edit, ManifestEdit::Mean(..)) {
                "mean"
            } else {
                "std"
            };
            let mut values = [0.5f64; 3];
            values[*c as usize % 3] = *v as f64;
            doc["input"][key] = value(toml_edit::Array::from_iter(values));
        }
        ManifestEdit::ResizeShorter(s) => doc["input"]["resize_shorter"] = value(*s as i64),
        ManifestEdit::Tap { tensor, stride } => {
            if let Some(t) = name(*tensor) {
                let mut tap = toml_edit::Table::new();
                tap["name"] = value("fuzz");
                tap["tensor"] = value(t);
                tap["stride"] = value(*stride as i64);
                let taps = doc
                    .entry("taps")
                    .or_insert(toml_edit::Item::ArrayOfTables(Default::default()));
                if let Some(array) = taps.as_array_of_tables_mut() {
                    array.push(tap);
                }
            }
        }
        ManifestEdit::NoTaps => {
            doc.remove("taps");
        }
        ManifestEdit::Conf(c) => doc["output"]["conf"] = value(*c as f64),
        ManifestEdit::Iou(c) => doc["output"]["iou"] = value(*c as f64),
        ManifestEdit::PadValue(p) => doc["input"]["pad_value"] = value(*p as i64),
        ManifestEdit::Size(w, h) => {
            doc["input"]["width"] = value(*w as i64);
            doc["input"]["height"] = value(*h as i64);
        }
    }
}

/// Loads the bundle in `dir` as `edgebone` does and runs one frame through it;
/// every failure must be an error, never a panic.
pub fn load_and_run(dir: &Path, mutant: &Mutant) {
    use edgebone::model::Outputs;
    use edgebone::{Bundle, Model, ModelOptions, Pipeline, RgbFrame, Task};
    let Ok(bundle) = Bundle::open(dir) else {
        return;
    };
    let options = ModelOptions {
        input_size: Some(mutant.input_size),
        ..ModelOptions::default()
    };
    if mutant.cut {
        let Ok(mut model) = Model::load(&bundle, &options, Outputs::Head) else {
            return;
        };
        let shape = model.input_shape();
        let input = tract_onnx::prelude::Tensor::zero::<f32>(&shape).unwrap();
        let _ = model.run(input.into());
        return;
    }
    let task = if mutant.features {
        Task::Features
    } else {
        Task::head(&bundle.manifest)
    };
    let Ok(mut pipeline) = Pipeline::load(bundle, task, &options) else {
        return;
    };
    let frame = RgbFrame::new(40, 24, (0..40 * 24 * 3).map(|i| i as u8).collect()).unwrap();
    let _ = pipeline.run(&frame);
}

/// A scratch folder for this process' mutants.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("edgebone-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}
