//! Ultralytics YOLOv5 (the v6.0+ layers: Conv, C3, SPPF, nn.Upsample, Concat,
//! Detect), built from the model object a `.pt` pickles: its `yaml` dict gives
//! the layers and the depth and width multiples, as Ultralytics' `parse_model`
//! reads them; `names` the labels; `stride` the Detect strides; each
//! BatchNorm's pickled `eps` its epsilon. The Detect head is decoded in the
//! graph exactly as the shipped `models/yolov5n` export does (sigmoid, grid and
//! anchors, `[1, N, 5 + classes]` rows of cx, cy, w, h in input pixels), so the
//! runtime's YOLOv5 decoding and manifest apply unchanged.

use anyhow::{Context, Result, bail};
use edgebone::onnx::{attr, tensor};
use serde_json::Value as Json;
use tract_onnx::pb::TensorProto;
use tract_onnx::pb::tensor_proto::DataType;

use super::graph::{Conv, Graph};
use super::{Arch, Tap};
use crate::torch::Module;

/// The input size of the bundle (Ultralytics' default export size).
pub const INPUT: usize = 640;

/// What the pickled model says, read from its yaml and attributes.
pub struct Yolo {
    pub depth: f64,
    pub width: f64,
    pub classes: usize,
    pub names: Vec<String>,
    pub strides: Vec<f32>,
    layers: Vec<Layer>,
    /// How many of `layers` are the yaml's `backbone` (the taps are theirs).
    backbone: usize,
    anchors: Json,
}

/// One `[from, number, module, args]` row of the yaml's backbone or head.
struct Layer {
    from: Vec<i64>,
    number: usize,
    module: String,
    args: Vec<Json>,
}

/// The multiples of the published sizes (Ultralytics' yolov5{n,s,m,l,x}.yaml).
pub fn multiples(arch: Arch) -> Option<(f64, f64)> {
    match arch {
        Arch::Yolov5n => Some((0.33, 0.25)),
        Arch::Yolov5s => Some((0.33, 0.50)),
        Arch::Yolov5m => Some((0.67, 0.75)),
        Arch::Yolov5l => Some((1.0, 1.0)),
        Arch::Yolov5x => Some((1.33, 1.25)),
        _ => None,
    }
}

impl Yolo {
    pub fn read(model: &Module, arch: Arch) -> Result<Yolo> {
        let yaml = model
            .attributes
            .get("yaml")
            .and_then(Json::as_object)
            .with_context(|| {
                format!(
                    "the pickled {} has no `yaml` dict: not an Ultralytics YOLOv5 model",
                    model.class
                )
            })?;
        let number = |key: &str| {
            yaml.get(key)
                .and_then(Json::as_f64)
                .with_context(|| format!("the model's yaml has no number `{key}`"))
        };
        let depth = number("depth_multiple")?;
        let width = number("width_multiple")?;
        if let Some((d, w)) = multiples(arch)
            && ((d - depth).abs() > 1e-9 || (w - width).abs() > 1e-9)
        {
            bail!(
                "--arch {}: depth_multiple {d} and width_multiple {w} expected, but the \
                 model's yaml has {depth} and {width} (use --arch yolov5 to take any size)",
                arch.name()
            );
        }
        if let Some(act) = yaml.get("activation").and_then(Json::as_str)
            && act != "nn.SiLU()"
        {
            bail!(
                "the model's yaml sets activation {act:?}; only nn.SiLU() (the default) is built"
            );
        }
        let classes = number("nc")? as usize;
        let mut layers = Vec::new();
        let mut backbone = 0;
        for part in ["backbone", "head"] {
            let rows = yaml
                .get(part)
                .and_then(Json::as_array)
                .with_context(|| format!("the model's yaml has no `{part}` list"))?;
            for row in rows {
                layers.push(layer(row).with_context(|| {
                    format!("the yaml's {part}, layer {}: {row}", layers.len())
                })?);
            }
            if part == "backbone" {
                backbone = layers.len();
            }
        }
        let names = names(model.attributes.get("names"), classes)?;
        let strides = model
            .tensor("stride")
            .map(|t| t.values.clone())
            .context("the pickled model has no `stride` tensor")?;
        Ok(Yolo {
            depth,
            width,
            classes,
            names,
            strides,
            layers,
            backbone,
            anchors: yaml.get("anchors").cloned().unwrap_or(Json::Null),
        })
    }
}

fn layer(row: &Json) -> Result<Layer> {
    let [from, number, module, args] = row.as_array().map(Vec::as_slice).unwrap_or(&[]) else {
        bail!("a [from, number, module, args] row expected");
    };
    let from = match from {
        Json::Array(list) => list.iter().filter_map(Json::as_i64).collect(),
        other => vec![other.as_i64().context("`from` is not an index")?],
    };
    Ok(Layer {
        from,
        number: number.as_u64().context("`number` is not a count")? as usize,
        module: module
            .as_str()
            .context("`module` is not a name")?
            .to_string(),
        args: args.as_array().cloned().unwrap_or_default(),
    })
}

/// `names` as a list, or as YOLOv5's later `{0: "person", …}` dict.
fn names(value: Option<&Json>, classes: usize) -> Result<Vec<String>> {
    let names: Vec<String> = match value {
        Some(Json::Array(items)) => items
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .context("`names` holds something other than strings")?,
        Some(Json::Object(map)) => (0..classes)
            .map(|i| map.get(&i.to_string()).and_then(Json::as_str))
            .map(|n| n.map(str::to_string))
            .collect::<Option<_>>()
            .context("`names` does not name every class 0..nc")?,
        _ => bail!("the pickled model has no `names` list"),
    };
    if names.len() != classes {
        bail!(
            "the model has {} names for {classes} classes (yaml nc)",
            names.len()
        );
    }
    Ok(names)
}

/// Ultralytics' `make_divisible(x, 8)`: channels rounded up to a multiple of 8.
fn make_divisible(x: f64) -> usize {
    ((x / 8.0).ceil() * 8.0) as usize
}

/// One graph input of a layer: its tensor, channels and stride.
#[derive(Clone)]
struct Map {
    tensor: String,
    channels: usize,
    stride: usize,
}

/// Ultralytics' `Conv`: conv (no bias), BatchNorm (the module's eps), SiLU.
struct Block<'g, 'a> {
    g: &'g mut Graph<'a>,
    model: &'g Module,
}

impl Block<'_, '_> {
    fn conv(
        &mut self,
        m: &str,
        x: &Map,
        cout: usize,
        k: usize,
        s: usize,
        p: Option<usize>,
    ) -> Result<Map> {
        let bn = self
            .model
            .get(&format!("{m}.bn"))
            .with_context(|| format!("{m}.bn: no such module in the pickled model"))?;
        self.g.bn_eps = bn
            .attributes
            .get("eps")
            .and_then(Json::as_f64)
            .with_context(|| format!("{m}.bn: no `eps`"))? as f32;
        let c = Conv {
            cin: x.channels,
            cout,
            kernel: k,
            stride: s,
            groups: 1,
            bias: false,
            pad: p,
        };
        let y = self.g.conv(&format!("{m}.conv"), &x.tensor, c)?;
        let y = self.g.batch_norm(&format!("{m}.bn"), &y, cout)?;
        let y = self.g.silu(&format!("{m}.act"), &y);
        Ok(Map {
            tensor: y,
            channels: cout,
            stride: x.stride * s,
        })
    }

    /// C3: cv3(cat(m(cv1(x)), cv2(x))), `m` being `n` Bottlenecks.
    fn c3(&mut self, m: &str, x: &Map, c2: usize, n: usize, shortcut: bool) -> Result<Map> {
        let hidden = c2 / 2;
        let mut y = self.conv(&format!("{m}.cv1"), x, hidden, 1, 1, None)?;
        for b in 0..n {
            let bm = format!("{m}.m.{b}");
            let h = self.conv(&format!("{bm}.cv1"), &y, hidden, 1, 1, None)?;
            let h = self.conv(&format!("{bm}.cv2"), &h, hidden, 3, 1, None)?;
            y = if shortcut {
                Map {
                    tensor: self.g.add(&bm, &y.tensor, &h.tensor),
                    ..h
                }
            } else {
                h
            };
        }
        let z = self.conv(&format!("{m}.cv2"), x, hidden, 1, 1, None)?;
        let cat = Map {
            tensor: self.g.concat(m, &[y.tensor, z.tensor]),
            channels: 2 * hidden,
            stride: x.stride,
        };
        self.conv(&format!("{m}.cv3"), &cat, c2, 1, 1, None)
    }

    /// SPPF: cv2(cat(x, m(x), m(m(x)), m(m(m(x))))) after cv1, `m` a k×k max pool.
    fn sppf(&mut self, m: &str, x: &Map, c2: usize, k: usize) -> Result<Map> {
        let x = self.conv(&format!("{m}.cv1"), x, x.channels / 2, 1, 1, None)?;
        let mut pooled = vec![x.tensor.clone()];
        for call in 0..3 {
            let last = pooled.last().unwrap().clone();
            let y = self
                .g
                .max_pool_k(&format!("{m}.m"), call, &last, k, 1, k / 2);
            pooled.push(y);
        }
        let cat = Map {
            tensor: self.g.concat(m, &pooled),
            channels: 4 * x.channels,
            stride: x.stride,
        };
        self.conv(&format!("{m}.cv2"), &cat, c2, 1, 1, None)
    }
}

fn int64_tensor(dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn scalar(v: f32) -> TensorProto {
    tensor::float_tensor("", &[], &[v])
}

/// The argument `j` of a layer as an integer (a missing one takes `default`).
fn arg(args: &[Json], j: usize, default: Option<i64>, what: &str) -> Result<i64> {
    match args.get(j) {
        Some(v) if v.is_i64() => Ok(v.as_i64().unwrap()),
        Some(Json::Null) | None => {
            default.with_context(|| format!("argument {j} ({what}) is missing"))
        }
        Some(other) => bail!("argument {j} ({what}) is {other}, an integer expected"),
    }
}

/// The graph; returns the output tensor, its row count and the taps.
pub fn build(g: &mut Graph, model: &Module, yolo: &Yolo) -> Result<(String, usize, Vec<Tap>)> {
    g.flat_root = true;
    let outputs = yolo.classes + 5;
    let input = Map {
        tensor: "input".into(),
        channels: 3,
        stride: 1,
    };
    let mut maps: Vec<Map> = Vec::new();
    let mut backbone_taps = Vec::new();
    let mut rows = None;
    for (i, layer) in yolo.layers.iter().enumerate() {
        let m = format!("model.{i}");
        let at = |f: i64| -> Result<Map> {
            let index = if f < 0 { i as i64 + f } else { f };
            if index < 0 && i == 0 {
                return Ok(input.clone());
            }
            maps.get(index as usize)
                .cloned()
                .with_context(|| format!("layer {i} reads layer {f}, which is not before it"))
        };
        let short = layer.module.rsplit('.').next().unwrap_or(&layer.module);
        let pickled = model.get(&m).with_context(|| {
            format!(
                "{m}: the yaml has a {} there but the pickled model has no such module",
                layer.module
            )
        })?;
        let pickled_short = pickled.class.rsplit('.').next().unwrap_or("");
        if pickled_short != short {
            bail!(
                "{m}: the yaml says {} but the pickled module is {}",
                layer.module,
                pickled.class
            );
        }
        let n = if layer.number > 1 {
            // Python's round(): halves to even.
            ((layer.number as f64 * yolo.depth).round_ties_even() as usize).max(1)
        } else {
            layer.number
        };
        let width = |c: i64| make_divisible(c as f64 * yolo.width);
        let x = at(*layer.from.first().context("an empty `from`")?)?;
        let mut block = Block { g, model };
        let context = || format!("{m} ({})", layer.module);
        let y = match layer.module.as_str() {
            "Conv" => {
                let c2 = width(arg(&layer.args, 0, None, "channels")?);
                let k = arg(&layer.args, 1, Some(1), "kernel")? as usize;
                let s = arg(&layer.args, 2, Some(1), "stride")? as usize;
                let p = arg(&layer.args, 3, Some(-1), "padding")?;
                let p = (p >= 0).then_some(p as usize);
                block.conv(&m, &x, c2, k, s, p).with_context(context)?
            }
            "C3" => {
                let c2 = width(arg(&layer.args, 0, None, "channels")?);
                let shortcut = layer.args.get(1).and_then(Json::as_bool).unwrap_or(true);
                block.c3(&m, &x, c2, n, shortcut).with_context(context)?
            }
            "SPPF" => {
                let c2 = width(arg(&layer.args, 0, None, "channels")?);
                let k = arg(&layer.args, 1, Some(5), "kernel")? as usize;
                block.sppf(&m, &x, c2, k).with_context(context)?
            }
            "nn.Upsample" => {
                let scale = arg(&layer.args, 1, None, "scale_factor")?;
                let mode = layer
                    .args
                    .get(2)
                    .and_then(Json::as_str)
                    .unwrap_or("nearest");
                if mode != "nearest" {
                    bail!("{m}: Upsample mode {mode:?}; only \"nearest\" is built");
                }
                Map {
                    tensor: g.upsample_nearest(&m, &x.tensor, scale as f32),
                    channels: x.channels,
                    stride: x.stride / scale as usize,
                }
            }
            "Concat" => {
                let parts = layer
                    .from
                    .iter()
                    .map(|&f| at(f))
                    .collect::<Result<Vec<_>>>()?;
                let tensors: Vec<String> = parts.iter().map(|p| p.tensor.clone()).collect();
                Map {
                    tensor: g.concat(&m, &tensors),
                    channels: parts.iter().map(|p| p.channels).sum(),
                    stride: x.stride,
                }
            }
            "Detect" => {
                let levels = layer
                    .from
                    .iter()
                    .map(|&f| at(f))
                    .collect::<Result<Vec<_>>>()?;
                let (out, n_rows) = detect(g, &m, &levels, yolo, outputs).with_context(context)?;
                rows = Some(n_rows);
                Map {
                    tensor: out,
                    channels: outputs,
                    stride: 0,
                }
            }
            other => bail!(
                "{m}: module {other} is not supported (YOLOv5 v6.0 and later: Conv, C3, SPPF, \
                 nn.Upsample, Concat, Detect)"
            ),
        };
        if i < yolo.backbone {
            backbone_taps.push((m.clone(), y.tensor.clone(), y.stride as u32));
        }
        maps.push(y);
    }
    let rows = rows.context("the model has no Detect layer")?;
    let output = maps.last().unwrap().tensor.clone();
    Ok((output, rows, super::arch::stride_taps(&backbone_taps)))
}

/// Detect: per level a 1×1 conv to anchors × (5 + classes), reshaped to
/// `[1, anchors, ny, nx, 5 + classes]`, sigmoid, then xy = (2s + grid − 0.5) ·
/// stride and wh = (2s)² · anchor, rows concatenated: Ultralytics' export.
fn detect(
    g: &mut Graph,
    m: &str,
    levels: &[Map],
    yolo: &Yolo,
    outputs: usize,
) -> Result<(String, usize)> {
    let nl = levels.len();
    if yolo.strides.len() != nl {
        bail!(
            "{} strides in the model for {nl} Detect inputs",
            yolo.strides.len()
        );
    }
    let na = yolo
        .anchors
        .as_array()
        .and_then(|a| a.first())
        .and_then(Json::as_array)
        .map_or(0, |a| a.len() / 2);
    if na == 0 {
        bail!("the yaml's anchors are not a list of [w, h, …] per level");
    }
    // The anchors buffer (grid units; autoanchor may have changed it since the
    // yaml was written), as the model computes with it.
    let anchors = g.buffer(&format!("{m}.anchors"), &[nl, na, 2])?;
    let mut rows = Vec::new();
    let mut total = 0;
    for (i, level) in levels.iter().enumerate() {
        let stride = yolo.strides[i];
        if level.stride as f32 != stride {
            bail!(
                "Detect input {i} has stride {} but the model's stride is {stride}",
                level.stride
            );
        }
        let (ny, nx) = (INPUT / level.stride, INPUT / level.stride);
        let c = Conv {
            cin: level.channels,
            cout: na * outputs,
            kernel: 1,
            stride: 1,
            groups: 1,
            bias: true,
            pad: None,
        };
        let y = g.conv(&format!("{m}.m.{i}"), &level.tensor, c)?;
        let shape = g.constant(
            m,
            int64_tensor(&[5], &[1, na as i64, outputs as i64, ny as i64, nx as i64]),
        );
        let y = g.op(
            m,
            "Reshape",
            &[&y, &shape],
            vec![attr::int_attr("allowzero", 0)],
        );
        let y = g.op(
            m,
            "Transpose",
            &[&y],
            vec![attr::ints_attr("perm", vec![0, 1, 3, 4, 2])],
        );
        let y = g.sigmoid(m, &y);
        let split = g.constant(m, int64_tensor(&[3], &[2, 2, outputs as i64 - 4]));
        let parts = g.node_outputs(
            m,
            0,
            "Split",
            &[&y, &split],
            vec![attr::int_attr("axis", 4)],
            3,
        );
        let cells = na * ny * nx;
        let mut grid = Vec::with_capacity(cells * 2);
        let mut anchor_grid = Vec::with_capacity(cells * 2);
        for a in 0..na {
            for gy in 0..ny {
                for gx in 0..nx {
                    grid.extend([gx as f32 - 0.5, gy as f32 - 0.5]);
                    let at = (i * na + a) * 2;
                    anchor_grid.extend([anchors[at] * stride, anchors[at + 1] * stride]);
                }
            }
        }
        let dims = [1, na as i64, ny as i64, nx as i64, 2];
        let two = g.constant(m, scalar(2.0));
        let xy = g.mul(m, &parts[0], &two);
        let grid = g.constant(m, tensor::float_tensor("", &dims, &grid));
        let xy = g.add(m, &xy, &grid);
        let s = g.constant(m, scalar(stride));
        let xy = g.mul(m, &xy, &s);
        let two = g.constant(m, scalar(2.0));
        let wh = g.mul(m, &parts[1], &two);
        let power = g.constant(m, scalar(2.0));
        let wh = g.op(m, "Pow", &[&wh, &power], vec![]);
        let anchor_grid = g.constant(m, tensor::float_tensor("", &dims, &anchor_grid));
        let wh = g.mul(m, &wh, &anchor_grid);
        let y = g.op(
            m,
            "Concat",
            &[&xy, &wh, &parts[2]],
            vec![attr::int_attr("axis", 4)],
        );
        let shape = g.constant(m, int64_tensor(&[3], &[1, cells as i64, outputs as i64]));
        rows.push(g.op(
            m,
            "Reshape",
            &[&y, &shape],
            vec![attr::int_attr("allowzero", 0)],
        ));
        total += cells;
    }
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    let out = g.op(m, "Concat", &refs, vec![attr::int_attr("axis", 1)]);
    Ok((out, total))
}
