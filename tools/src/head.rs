//! `quantize head`: a bundle's classifier replaced by a fresh N-class linear layer,
//! and what `train-head` and `inspect` share with it: finding the head in the
//! ONNX graph, writing a headed bundle, and the `head.json` sidecar that says
//! which layer is the head and that everything else is frozen.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgebone::Bundle;
use edgebone::model::{MANIFEST_FILE, sha256_hex};
use edgebone::onnx::{self, Index, attr, tensor};
use serde::{Deserialize, Serialize};
use tract_onnx::pb::{GraphProto, ModelProto, tensor_shape_proto, type_proto};

/// The sidecar beside `manifest.toml`. The runtime's manifest refuses unknown
/// keys (a typo must stop a device at start), so what only the host tools need
/// lives here; `edgebone` never reads it.
pub const SIDECAR: &str = "head.json";

/// The linear layer that makes the bundle's output.
#[derive(Debug, Clone)]
pub struct Head {
    /// torchvision's module name: `fc`, `classifier.1`, …
    pub layer: String,
    /// The Gemm (or MatMul) node.
    pub node: usize,
    /// Initializer names of the weight and the bias.
    pub weight: String,
    pub bias: String,
    /// Gemm with transB = 1 (PyTorch's export): the weight is `[classes, features]`;
    /// otherwise `[features, classes]` as MatMul takes it.
    pub transposed: bool,
    pub features: usize,
    pub classes: usize,
    /// The graph output it writes.
    pub output: String,
}

/// The head of a graph: the Gemm, or the MatMul + Add, whose result is the
/// output `output` (the manifest's, or the graph's first).
pub fn find(graph: &GraphProto, output: Option<&str>) -> Result<Head> {
    let output = match output {
        Some(name) => name.to_string(),
        None => graph
            .output
            .first()
            .map(|o| o.name.clone())
            .context("the graph has no output")?,
    };
    let index = Index::new(graph);
    let not_linear = |what: &str| {
        anyhow::anyhow!(
            "output {output:?} is not made by a linear layer ({what}): only a classifier's \
             head (Gemm, or MatMul + Add, with constant weights) can be replaced"
        )
    };
    let producer = index
        .producer(&output)
        .ok_or_else(|| not_linear("no node writes it"))?;
    let node = &graph.node[producer];
    let (node_index, weight, bias, transposed) = match node.op_type.as_str() {
        "Gemm" if node.input.len() == 3 => {
            if attr::int(node, "transA").unwrap_or(0) != 0 {
                return Err(not_linear("a Gemm with transA"));
            }
            let transposed = attr::int(node, "transB").unwrap_or(0) != 0;
            (
                producer,
                node.input[1].clone(),
                node.input[2].clone(),
                transposed,
            )
        }
        "Add" => {
            // MatMul(x, W) + b, in either order of Add's inputs.
            let (mm, b) = match (
                index.producer(&node.input[0]),
                index.producer(&node.input[1]),
            ) {
                (Some(p), _) if graph.node[p].op_type == "MatMul" => (p, &node.input[1]),
                (_, Some(p)) if graph.node[p].op_type == "MatMul" => (p, &node.input[0]),
                _ => return Err(not_linear("an Add after no MatMul")),
            };
            (mm, graph.node[mm].input[1].clone(), b.clone(), false)
        }
        op => return Err(not_linear(&format!("a {op} node"))),
    };
    let constant = |name: &str| {
        index
            .initializer(graph, name)
            .ok_or_else(|| not_linear(&format!("{name} is not a constant")))
    };
    let w = constant(&weight)?;
    let b = constant(&bias)?;
    let (classes, features) = match (w.dims.as_slice(), transposed) {
        ([n, f], true) | ([f, n], false) => (*n as usize, *f as usize),
        (dims, _) => return Err(not_linear(&format!("weight {weight} of shape {dims:?}"))),
    };
    if b.dims.iter().product::<i64>() as usize != classes {
        return Err(not_linear(&format!(
            "bias {bias} of shape {:?} for {classes} classes",
            b.dims
        )));
    }
    // torch.onnx.export keeps the module's names on a Linear's weights
    // (`classifier.1.weight`); a generated name falls back on the node's path
    // (`/classifier/classifier.1/Gemm` → `classifier.1`).
    let layer = match weight.strip_suffix(".weight") {
        Some(layer) => layer.to_string(),
        None => {
            let name = &graph.node[node_index].name;
            let parts: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
            match parts.as_slice() {
                [.., module, _op] => module.to_string(),
                _ => "head".to_string(),
            }
        }
    };
    Ok(Head {
        layer,
        node: node_index,
        weight,
        bias,
        transposed,
        features,
        classes,
        output,
    })
}

/// The head's weight as `[classes][features]` rows (PyTorch's layout) and its bias.
pub fn read(graph: &GraphProto, head: &Head) -> Result<(Vec<f32>, Vec<f32>)> {
    let index = Index::new(graph);
    let get = |name: &str| -> Result<Vec<f32>> {
        let t = index.initializer(graph, name).context("checked by find")?;
        Ok(tensor::floats(t)?)
    };
    let w = get(&head.weight)?;
    let w = if head.transposed {
        w
    } else {
        transpose(&w, head.features, head.classes)
    };
    Ok((w, get(&head.bias)?))
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Puts a new layer in the head's place: `weight` is `[classes][features]`. The
/// tensors take torchvision's names (`{layer}.weight`, `{layer}.bias`), so
/// `inspect` prints `classifier.1.weight torch.Size([N, 1280])`; the output's
/// declared shape follows the class count.
pub fn replace(graph: &mut GraphProto, head: &Head, weight: &[f32], bias: &[f32]) -> Result<Head> {
    let classes = bias.len();
    if weight.len() != classes * head.features {
        bail!(
            "a {classes}-class head over {} features needs {} weights, got {}",
            head.features,
            classes * head.features,
            weight.len()
        );
    }
    let (w_name, b_name) = (
        format!("{}.weight", head.layer),
        format!("{}.bias", head.layer),
    );
    let (w_dims, w_values) = if head.transposed {
        (vec![classes as i64, head.features as i64], weight.to_vec())
    } else {
        (
            vec![head.features as i64, classes as i64],
            transpose(weight, classes, head.features),
        )
    };
    graph
        .initializer
        .retain(|t| t.name != head.weight && t.name != head.bias);
    graph
        .initializer
        .push(tensor::float_tensor(&w_name, &w_dims, &w_values));
    graph
        .initializer
        .push(tensor::float_tensor(&b_name, &[classes as i64], bias));
    // Old exporters also list weights as graph inputs, with their old shapes.
    graph
        .input
        .retain(|i| i.name != head.weight && i.name != head.bias);
    let rename = |name: &mut String| {
        if *name == head.weight {
            *name = w_name.clone();
        } else if *name == head.bias {
            *name = b_name.clone();
        }
    };
    for node in &mut graph.node {
        node.input.iter_mut().for_each(rename);
    }
    if graph.node[head.node].op_type == "Gemm" {
        // The new weights carry the whole product.
        let node = &mut graph.node[head.node];
        attr::set(node, attr::float_attr("alpha", 1.0));
        attr::set(node, attr::float_attr("beta", 1.0));
    }
    // Intermediate shapes recorded by the exporter would now be wrong for the output.
    graph.value_info.retain(|v| v.name != head.output);
    for output in graph.output.iter_mut().filter(|o| o.name == head.output) {
        if let Some(type_proto::Value::TensorType(t)) =
            output.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(last) = t.shape.as_mut().and_then(|s| s.dim.last_mut())
        {
            last.value = Some(tensor_shape_proto::dimension::Value::DimValue(
                classes as i64,
            ));
        }
    }
    Ok(Head {
        weight: w_name,
        bias: b_name,
        classes,
        ..head.clone()
    })
}

/// SplitMix64: a seeded stream for the initial weights and the training shuffles.
/// Eight lines, so no `rand` dependency; the exact values never have to match
/// PyTorch's (its generator is not reproducible outside PyTorch anyway), only
/// the distribution.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// PyTorch's default `nn.Linear` init: `kaiming_uniform_(a=√5)` on the weight is
/// uniform in ±1/√in_features, and the bias is uniform in the same bound.
pub fn linear_init(classes: usize, features: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let bound = 1.0 / (features as f64).sqrt();
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
            .collect()
    };
    let w = draw(classes * features);
    let b = draw(classes);
    (w, b)
}

pub const INIT: &str = "PyTorch's nn.Linear default: weight and bias uniform in ±1/sqrt(in_features) (SplitMix64 stream)";

/// `head.json`: which layer is the head, how it was made, and that every other
/// parameter is the source bundle's, frozen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sidecar {
    pub layer: String,
    pub parameters: Vec<String>,
    pub classes: usize,
    pub features: usize,
    pub init: String,
    pub seed: u64,
    /// The bundle whose backbone this is.
    pub source: String,
    pub source_sha256: String,
    pub frozen: String,
    /// What `train-head` recorded; absent for a fresh head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<serde_json::Value>,
}

impl Sidecar {
    pub fn new(source: &Bundle, head: &Head, seed: u64) -> Sidecar {
        Sidecar {
            layer: head.layer.clone(),
            parameters: vec![head.weight.clone(), head.bias.clone()],
            classes: head.classes,
            features: head.features,
            init: INIT.to_string(),
            seed,
            source: source.manifest.name.clone(),
            source_sha256: source.manifest.sha256.clone(),
            frozen: "every parameter outside the head: the source bundle's backbone, unchanged"
                .to_string(),
            training: None,
        }
    }

    pub fn read(dir: &Path) -> Result<Option<Sidecar>> {
        let path = dir.join(SIDECAR);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(None);
        };
        Ok(Some(
            serde_json::from_str(&text).with_context(|| path.display().to_string())?,
        ))
    }
}

/// Carries `head.json` from `source` to `out` (a bundle made from it, as
/// `quantize int8` makes one), so `inspect` still says which layer is the head.
pub fn copy_sidecar(source: &Path, out: &Path) -> Result<()> {
    let from = source.join(SIDECAR);
    let Ok(text) = std::fs::read(&from) else {
        return Ok(());
    };
    let to = out.join(SIDECAR);
    std::fs::write(&to, text).with_context(|| to.display().to_string())
}

/// The labels of a new head: a file's non-empty lines, or `class0`, `class1`, …
pub fn labels(classes: Option<usize>, file: Option<&Path>) -> Result<Vec<String>> {
    let labels: Vec<String> = match (classes, file) {
        (_, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("labels file {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
        (Some(n), None) => (0..n).map(|i| format!("class{i}")).collect(),
        (None, None) => bail!("give --classes N or --labels FILE"),
    };
    if labels.len() < 2 {
        bail!(
            "a classifier needs at least two classes, got {}",
            labels.len()
        );
    }
    Ok(labels)
}

/// Writes `out` as a copy of `source` with `proto` as its network, `labels` as
/// its labels and `sidecar` beside the manifest; the manifest keeps everything
/// else (preprocessing, taps) and gets the new sha256.
pub fn write_bundle(
    source: &Bundle,
    proto: &ModelProto,
    head: &Head,
    labels: &[String],
    out: &Path,
    sidecar: &Sidecar,
    what: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("output folder {}", out.display()))?;
    if out.canonicalize().ok() == source.dir.canonicalize().ok() {
        bail!("--out {} is the source bundle itself", out.display());
    }
    let network = source.manifest.network.clone();
    let network_path = out.join(&network);
    onnx::save(proto, &network_path)?;
    let sha256 = sha256_hex(&network_path)?;
    let labels_path = out.join("labels.txt");
    std::fs::write(&labels_path, labels.join("\n") + "\n")
        .with_context(|| labels_path.display().to_string())?;
    let manifest_path = source.dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| manifest_path.display().to_string())?;
    let mut manifest: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| manifest_path.display().to_string())?;
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(&source.manifest.name);
    manifest["name"] = toml_edit::value(name);
    manifest["network"] = toml_edit::value(network);
    manifest["sha256"] = toml_edit::value(sha256);
    manifest["labels"] = toml_edit::value("labels.txt");
    manifest["output"]["name"] = toml_edit::value(&head.output);
    let header = format!(
        "# {} with {what}: `{}` ({} classes, labels.txt); every other layer is\n\
         # {}'s, frozen. head.json says which tensors are the head and how they were made.\n",
        source.manifest.name,
        head.layer,
        labels.len(),
        source.manifest.name
    );
    let manifest_out = out.join(MANIFEST_FILE);
    std::fs::write(&manifest_out, header + &manifest.to_string())
        .with_context(|| manifest_out.display().to_string())?;
    let sidecar_path = out.join(SIDECAR);
    std::fs::write(&sidecar_path, serde_json::to_string_pretty(sidecar)? + "\n")
        .with_context(|| sidecar_path.display().to_string())?;
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::ValueInfoProto;

    fn gemm_graph(transposed: bool) -> GraphProto {
        let mut gemm = onnx::node("Gemm", "/fc/Gemm", &["x", "fc.weight", "fc.bias"], &["y"]);
        gemm.attribute
            .push(attr::int_attr("transB", transposed as i64));
        let dims = if transposed { [3, 2] } else { [2, 3] };
        GraphProto {
            node: vec![gemm],
            initializer: vec![
                tensor::float_tensor("fc.weight", &dims, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                tensor::float_tensor("fc.bias", &[3], &[0.0; 3]),
            ],
            output: vec![ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn finds_and_replaces_a_gemm_head_in_either_layout() {
        for transposed in [true, false] {
            let mut g = gemm_graph(transposed);
            let head = find(&g, None).unwrap();
            assert_eq!(
                (head.layer.as_str(), head.classes, head.features),
                ("fc", 3, 2)
            );
            let (w, _) = read(&g, &head).unwrap();
            // PyTorch's [classes][features] rows, whichever way the graph stores them.
            let expected = if transposed {
                [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
            } else {
                [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
            };
            assert_eq!(w, expected);
            let new = replace(
                &mut g,
                &head,
                &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0],
                &[0.5; 4],
            )
            .unwrap();
            assert_eq!(new.classes, 4);
            let head = find(&g, None).unwrap();
            assert_eq!(head.classes, 4);
            let (w, b) = read(&g, &head).unwrap();
            assert_eq!(w, [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0]);
            assert_eq!(b, [0.5; 4]);
        }
    }

    #[test]
    fn refuses_an_output_no_linear_layer_makes() {
        let g = GraphProto {
            node: vec![onnx::node("Relu", "r", &["x"], &["y"])],
            output: vec![ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = find(&g, None).unwrap_err().to_string();
        assert!(
            err.contains("not made by a linear layer (a Relu node)"),
            "{err}"
        );
    }

    #[test]
    fn init_has_pytorch_bounds_and_depends_on_the_seed() {
        let (w, b) = linear_init(3, 1280, 7);
        let bound = 1.0 / 1280f32.sqrt();
        assert!(w.iter().chain(&b).all(|v| v.abs() <= bound));
        // Uniform: the spread covers most of the bound.
        let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max > 0.99 * bound, "{max} vs {bound}");
        assert_eq!(linear_init(3, 1280, 7).0, w);
        assert_ne!(linear_init(3, 1280, 8).0, w);
    }

    #[test]
    fn labels_from_a_count_or_a_file() {
        assert_eq!(labels(Some(2), None).unwrap(), ["class0", "class1"]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("l.txt");
        std::fs::write(&file, "cat\n\ndog\n").unwrap();
        assert_eq!(labels(None, Some(&file)).unwrap(), ["cat", "dog"]);
        let err = labels(Some(1), None).unwrap_err().to_string();
        assert!(err.contains("at least two classes, got 1"), "{err}");
    }
}
