//! A pickled `nn.Module` read as data: Ultralytics' `.pt` files pickle the whole
//! model object (`models.yolo.Model`, its `yaml` dict, `names`, `stride` and the
//! module tree) rather than a state_dict. The placeholders the pickle reader
//! built ([`pickle::Object`]) are walked here into a tree of plain data, and the
//! state_dict `model.state_dict()` would give is collected on the way.

use std::collections::HashSet;
use std::rc::Rc;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value as Json};

use super::Tensor;
use super::pickle::{self, Object, TensorRef, Value};

/// Copies a tensor out of its storage (the caller has the storages).
pub type Materialise<'a> = dyn Fn(&TensorRef) -> Result<Tensor> + 'a;

/// One module: its class, its plain attributes and its children, by name.
#[derive(Debug, Clone)]
pub struct Module {
    /// `models.common.C3`, `torch.nn.modules.batchnorm.BatchNorm2d`, …
    pub class: String,
    /// Every attribute that is not a module's internals (`_parameters`,
    /// `_buffers`, `_modules`, hooks): numbers, strings, lists and dicts as
    /// JSON. Tensors are in `tensors`; a tensor or module nested deeper in an
    /// attribute is `null`.
    pub attributes: Map<String, Json>,
    /// Tensor attributes that are neither parameters nor buffers (YOLOv5's
    /// `Model.stride`), by attribute name.
    pub tensors: Vec<(String, Tensor)>,
    pub children: Vec<(String, Module)>,
}

impl Module {
    /// The submodule at a dotted path (`model.24`), as `get_submodule` finds it.
    pub fn get(&self, path: &str) -> Option<&Module> {
        path.split('.').try_fold(self, |m, part| {
            m.children.iter().find(|(n, _)| n == part).map(|(_, c)| c)
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// What walking a module gives: the tree, the state_dict (name → tensor in
/// `state_dict()` order) and which entries are parameters rather than buffers.
pub struct Walked {
    pub module: Module,
    pub state_dict: Vec<(String, Rc<TensorRef>)>,
    pub parameters: HashSet<String>,
}

pub fn walk(object: &Object, materialise: &Materialise) -> Result<Walked> {
    let mut walked = Walked {
        module: Module {
            class: String::new(),
            attributes: Map::new(),
            tensors: Vec::new(),
            children: Vec::new(),
        },
        state_dict: Vec::new(),
        parameters: HashSet::new(),
    };
    let mut seen = HashSet::new();
    walked.module = walk_module(object, "", &mut walked, &mut seen, materialise)?;
    Ok(walked)
}

/// The entries of an `OrderedDict` attribute of a module's state (absent: none).
fn entries(state: &[(Value, Value)], key: &str, class: &str) -> Result<Vec<(String, Value)>> {
    let Some((_, value)) = state.iter().find(|(k, _)| k.as_str() == Some(key)) else {
        return Ok(Vec::new());
    };
    let Value::Dict(dict) = value else {
        bail!("{class}.{key}: a dict expected, got {}", value.kind());
    };
    dict.borrow()
        .iter()
        .map(|(k, v)| match k.as_str() {
            Some(name) => Ok((name.to_string(), v.clone())),
            None => bail!("{class}.{key}: a key that is not a string"),
        })
        .collect()
}

fn walk_module(
    object: &Object,
    prefix: &str,
    out: &mut Walked,
    seen: &mut HashSet<usize>,
    materialise: &Materialise,
) -> Result<Module> {
    let class = object.class.clone();
    let at = if prefix.is_empty() {
        "the model".to_string()
    } else {
        prefix.trim_end_matches('.').to_string()
    };
    // A module reachable twice (shared, or a cycle) would be walked forever.
    if !seen.insert(object as *const Object as usize) {
        bail!("{at} ({class}) appears twice in the module tree");
    }
    let state = object.state.borrow();
    let Value::Dict(state) = &*state else {
        bail!(
            "{at} ({class}) has no state dict: not a pickled nn.Module (its state is a {})",
            state.kind()
        );
    };
    let state = state.borrow();
    if !state.iter().any(|(k, _)| k.as_str() == Some("_modules")) {
        bail!("{at} ({class}) is not an nn.Module (no _modules)");
    }
    let non_persistent: HashSet<String> = state
        .iter()
        .find(|(k, _)| k.as_str() == Some("_non_persistent_buffers_set"))
        .map(|(_, v)| match v {
            Value::List(items) => items
                .borrow()
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => HashSet::new(),
        })
        .unwrap_or_default();
    // torch's `_save_to_state_dict`: parameters, then persistent buffers, then
    // each child under its name.
    for (key, is_parameter) in [("_parameters", true), ("_buffers", false)] {
        for (name, value) in entries(&state, key, &class)? {
            match value {
                Value::None => {}
                Value::Tensor(t) if is_parameter || !non_persistent.contains(&name) => {
                    let full = format!("{prefix}{name}");
                    if is_parameter {
                        out.parameters.insert(full.clone());
                    }
                    out.state_dict.push((full, t));
                }
                Value::Tensor(_) => {}
                other => bail!(
                    "{prefix}{name} in {class}.{key}: a tensor expected, got {}",
                    other.kind()
                ),
            }
        }
    }
    let mut module = Module {
        class: class.clone(),
        attributes: Map::new(),
        tensors: Vec::new(),
        children: Vec::new(),
    };
    for (name, value) in entries(&state, "_modules", &class)? {
        match value {
            Value::None => {}
            Value::Object(child) => {
                let child =
                    walk_module(&child, &format!("{prefix}{name}."), out, seen, materialise)?;
                module.children.push((name, child));
            }
            other => bail!(
                "{prefix}{name} in {class}._modules: a module expected, got {}",
                other.kind()
            ),
        }
    }
    for (key, value) in state.iter() {
        let Some(key) = key.as_str() else { continue };
        if key.starts_with('_') {
            continue;
        }
        match value {
            Value::Tensor(t) => {
                let tensor = materialise(t).with_context(|| format!("{at}.{key}"))?;
                module.tensors.push((key.to_string(), tensor));
            }
            other => {
                let json = to_json(other, &mut HashSet::new());
                module.attributes.insert(key.to_string(), json);
            }
        }
    }
    Ok(module)
}

/// Plain data as JSON. Containers seen on the current path (a list holding
/// itself) become `null`, as do tensors, storages and objects below the top.
fn to_json(value: &Value, path: &mut HashSet<usize>) -> Json {
    if let Some(a) = pickle::address(value)
        && !path.insert(a)
    {
        return Json::Null;
    }
    let json = match value {
        Value::None => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => i64::try_from(*i).map_or(Json::Null, Json::from),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(s) => Json::String(s.clone()),
        Value::Tuple(items) => Json::Array(items.iter().map(|v| to_json(v, path)).collect()),
        Value::List(items) => {
            Json::Array(items.borrow().iter().map(|v| to_json(v, path)).collect())
        }
        Value::Dict(items) => Json::Object(
            items
                .borrow()
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::Str(s) => s.clone(),
                        Value::Int(i) => i.to_string(),
                        other => format!("<{}>", other.kind()),
                    };
                    (key, to_json(v, path))
                })
                .collect(),
        ),
        Value::Bytes(_)
        | Value::Global(_)
        | Value::Storage(_)
        | Value::Tensor(_)
        | Value::Object(_) => Json::Null,
    };
    if let Some(a) = pickle::address(value) {
        path.remove(&a);
    }
    json
}

/// The model object of a checkpoint: the top object itself, or the one under
/// `ema` or `model` (Ultralytics saves both; `ema`, when set, is what its own
/// loader uses).
pub fn find(root: &Value) -> Option<(String, Rc<Object>)> {
    if let Value::Object(o) = root {
        return Some((String::new(), o.clone()));
    }
    let Value::Dict(top) = root else {
        return None;
    };
    let top = top.borrow();
    ["ema", "model"].into_iter().find_map(|key| {
        top.iter().find_map(|(k, v)| match v {
            Value::Object(o) if k.as_str() == Some(key) => Some((key.to_string(), o.clone())),
            _ => None,
        })
    })
}
