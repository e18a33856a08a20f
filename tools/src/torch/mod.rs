//! PyTorch checkpoints (`torch.save` files) read without Python: the zip archive
//! of PyTorch ≥ 1.6 and the legacy pickle stream before it. The pickle is read as
//! data ([`pickle`]); tensors are copied out of their storages contiguous, in f32
//! (fp16, bf16 and f64 converted) or i64.

mod module;
mod pickle;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod write;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

pub use module::Module;
use pickle::{StorageRef, TensorRef, Value};

/// The magic number a legacy checkpoint's first pickle holds.
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i128 = 1001;

/// Element types of torch storages (`torch.FloatStorage` is `Float`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn from_storage(name: &str) -> Option<DType> {
        let dtype = match name {
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "DoubleStorage" => DType::F64,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        };
        Some(dtype)
    }

    pub fn storage_name(self) -> &'static str {
        match self {
            DType::F32 => "Float",
            DType::F16 => "Half",
            DType::BF16 => "BFloat16",
            DType::F64 => "Double",
            DType::I64 => "Long",
            DType::I32 => "Int",
            DType::I16 => "Short",
            DType::I8 => "Char",
            DType::U8 => "Byte",
            DType::Bool => "Bool",
        }
    }

    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// PyTorch's spelling (`torch.float16`).
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F32 => "torch.float32",
            DType::F16 => "torch.float16",
            DType::BF16 => "torch.bfloat16",
            DType::F64 => "torch.float64",
            DType::I64 => "torch.int64",
            DType::I32 => "torch.int32",
            DType::I16 => "torch.int16",
            DType::I8 => "torch.int8",
            DType::U8 => "torch.uint8",
            DType::Bool => "torch.bool",
        }
    }

    /// Element `i` of little-endian `bytes`, as f64 (exact for every type here
    /// but the largest int64s, which a weight never holds).
    fn read(self, bytes: &[u8], i: usize) -> f64 {
        let at = |n: usize| &bytes[i * n..(i + 1) * n];
        match self {
            DType::F32 => f32::from_le_bytes(at(4).try_into().unwrap()) as f64,
            DType::F16 => half::f16::from_le_bytes(at(2).try_into().unwrap()).to_f64(),
            DType::BF16 => half::bf16::from_le_bytes(at(2).try_into().unwrap()).to_f64(),
            DType::F64 => f64::from_le_bytes(at(8).try_into().unwrap()),
            DType::I64 => i64::from_le_bytes(at(8).try_into().unwrap()) as f64,
            DType::I32 => i32::from_le_bytes(at(4).try_into().unwrap()) as f64,
            DType::I16 => i16::from_le_bytes(at(2).try_into().unwrap()) as f64,
            DType::I8 => at(1)[0] as i8 as f64,
            DType::U8 | DType::Bool => at(1)[0] as f64,
        }
    }
}

/// One state_dict entry, contiguous in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The type it was stored as.
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// The values, widened to f32 for floating types (integer buffers such as
    /// `num_batches_tracked` too: only their shape matters here).
    pub values: Vec<f32>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// `torch.Size([64, 3, 7, 7])`, as PyTorch prints a shape.
pub struct TorchSize<'a>(pub &'a [usize]);

impl fmt::Display for TorchSize<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let dims: Vec<String> = self.0.iter().map(usize::to_string).collect();
        write!(f, "torch.Size([{}])", dims.join(", "))
    }
}

/// Which container a checkpoint was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zip,
    Legacy,
}

/// A state_dict in its own order.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    pub entries: Vec<(String, Tensor)>,
    index: HashMap<String, usize>,
    /// Which entries are parameters, when the file says so (a pickled module
    /// keeps `_parameters` and `_buffers` apart); a bare state_dict does not.
    pub parameters: Option<HashSet<String>>,
}

impl StateDict {
    pub fn push(&mut self, name: String, tensor: Tensor) {
        self.index.insert(name.clone(), self.entries.len());
        self.entries.push((name, tensor));
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// What `sum(p.numel() for p in model.parameters())` gives for the model the
    /// state_dict came from. A state_dict does not say which entries are
    /// parameters and which buffers; the rule: every floating tensor except
    /// BatchNorm's running statistics (`running_mean`, `running_var`), and no
    /// integer tensor (`num_batches_tracked`). That is exact for torchvision's
    /// classifiers, whose only buffers those are. A pickled module says which
    /// are parameters, and that is used instead (YOLOv5's `anchors` is a
    /// floating buffer).
    pub fn parameter_count(&self) -> usize {
        self.entries
            .iter()
            .filter(|(name, t)| match &self.parameters {
                Some(parameters) => parameters.contains(name),
                None => {
                    t.dtype.is_float()
                        && !name.ends_with("running_mean")
                        && !name.ends_with("running_var")
                }
            })
            .map(|(_, t)| t.numel())
            .sum()
    }
}

/// A checkpoint read from disk.
#[derive(Debug)]
pub struct Checkpoint {
    pub format: Format,
    /// Where the state_dict (or the model object) was found: "" at the top, or
    /// the key it sat under.
    pub key: String,
    pub state_dict: StateDict,
    /// The model, when the file pickles a whole `nn.Module` (Ultralytics'
    /// `.pt`) rather than a state_dict; `state_dict` is then its `state_dict()`.
    pub model: Option<Module>,
}

pub fn read(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    read_bytes(&bytes).with_context(|| path.display().to_string())
}

pub fn read_bytes(bytes: &[u8]) -> Result<Checkpoint> {
    let (format, root, storages) = if bytes.starts_with(b"PK\x03\x04") {
        let (root, storages) = read_zip(bytes)?;
        (Format::Zip, root, storages)
    } else if bytes.starts_with(&[0x80]) {
        let (root, storages) = read_legacy(bytes)?;
        (Format::Legacy, root, storages)
    } else {
        bail!(
            "not a PyTorch checkpoint: neither a zip archive (PyTorch ≥ 1.6) nor a legacy \
             pickle stream"
        );
    };
    let copy = |t: &TensorRef| -> Result<Tensor> {
        let bytes = storages
            .get(&t.storage.key)
            .with_context(|| format!("storage {} is missing", t.storage.key))?;
        materialise(t, bytes)
    };
    let mut state_dict = StateDict::default();
    if let Some((key, object)) = module::find(&root) {
        let walked = module::walk(&object, &copy)
            .with_context(|| format!("the pickled model ({})", object.class))?;
        for (name, t) in walked.state_dict {
            let tensor = copy(&t).with_context(|| name.clone())?;
            state_dict.push(name, tensor);
        }
        state_dict.parameters = Some(walked.parameters);
        return Ok(Checkpoint {
            format,
            key,
            state_dict,
            model: Some(walked.module),
        });
    }
    let (key, dict) = find_state_dict(&root)?;
    for (name, value) in dict {
        let Value::Tensor(t) = value else {
            unreachable!("find_state_dict returns tensors only")
        };
        let tensor = copy(&t).with_context(|| name.clone())?;
        state_dict.push(name, tensor);
    }
    Ok(Checkpoint {
        format,
        key,
        state_dict,
        model: None,
    })
}

/// Every storage the pickle points at, by key. Each container is visited once:
/// the memo can share one (or make a list hold itself).
fn storages_of(root: &Value) -> Vec<StorageRef> {
    fn walk(v: &Value, seen: &mut HashSet<usize>, out: &mut Vec<StorageRef>) {
        if let Some(a) = pickle::address(v)
            && !seen.insert(a)
        {
            return;
        }
        match v {
            Value::Tensor(t) => out.push(t.storage.clone()),
            Value::Storage(s) => out.push(s.clone()),
            Value::Tuple(items) => items.iter().for_each(|i| walk(i, seen, out)),
            Value::List(items) => items.borrow().iter().for_each(|i| walk(i, seen, out)),
            Value::Dict(items) => items.borrow().iter().for_each(|(k, v)| {
                walk(k, seen, out);
                walk(v, seen, out)
            }),
            Value::Object(o) => walk(&o.state.borrow(), seen, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(root, &mut HashSet::new(), &mut out);
    out
}

fn read_zip(bytes: &[u8]) -> Result<(Value, HashMap<String, Vec<u8>>)> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .context("a truncated or corrupt zip archive")?;
    // torch.save names the top folder after the file (`archive/` in most files);
    // `data.pkl` one level down marks it.
    let pkl = (0..archive.len())
        .filter_map(|i| archive.name_for_index(i)?.ok().map(|n| n.to_string()))
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .context("a zip archive without <folder>/data.pkl: not a torch.save file")?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut entry = |name: &str| -> Result<Option<Vec<u8>>> {
        let mut file = match archive.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("zip entry {name}")),
        };
        let mut buf = Vec::with_capacity(file.size().min(1 << 30) as usize);
        file.read_to_end(&mut buf)
            .with_context(|| format!("zip entry {name}: truncated or corrupt"))?;
        Ok(Some(buf))
    };
    if let Some(order) = entry(&format!("{prefix}byteorder"))?
        && order != b"little"
    {
        bail!(
            "storages are {}-endian; only little-endian checkpoints are read",
            String::from_utf8_lossy(&order)
        );
    }
    let data = entry(&pkl)?.context("data.pkl")?;
    let mut pos = 0;
    let root = pickle::load(&data, &mut pos).map_err(anyhow::Error::msg)?;
    let mut storages = HashMap::new();
    for storage in storages_of(&root) {
        if storages.contains_key(&storage.key) {
            continue;
        }
        let name = format!("{prefix}data/{}", storage.key);
        let bytes =
            entry(&name)?.with_context(|| format!("storage {name} is not in the archive"))?;
        check_storage_len(&storage, bytes.len())?;
        storages.insert(storage.key.clone(), bytes);
    }
    Ok((root, storages))
}

fn check_storage_len(storage: &StorageRef, len: usize) -> Result<()> {
    let need = storage.numel.saturating_mul(storage.dtype.size());
    if len < need {
        bail!(
            "storage {} holds {len} bytes, {need} expected ({} {} elements): truncated",
            storage.key,
            storage.numel,
            storage.dtype.torch_name()
        );
    }
    Ok(())
}

/// The legacy stream: pickles of the magic number, the protocol version and
/// sys_info, then the object, then the list of storage keys, then each storage
/// as an 8-byte little-endian element count and its raw bytes, in that order.
fn read_legacy(bytes: &[u8]) -> Result<(Value, HashMap<String, Vec<u8>>)> {
    let mut pos = 0;
    let next = |what: &str, pos: &mut usize| {
        pickle::load(bytes, pos)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("legacy checkpoint, {what}"))
    };
    match next("magic number", &mut pos)? {
        Value::Int(LEGACY_MAGIC) => {}
        _ => bail!("a pickle, but not a torch.save file (no magic number)"),
    }
    match next("protocol version", &mut pos)? {
        Value::Int(LEGACY_PROTOCOL) => {}
        Value::Int(other) => bail!("legacy checkpoint: protocol version {other}, 1001 expected"),
        other => bail!(
            "legacy checkpoint: protocol version a {}, 1001 expected",
            other.kind()
        ),
    }
    if let Value::Dict(info) = next("sys_info", &mut pos)? {
        let little = info
            .borrow()
            .iter()
            .find(|(k, _)| k.as_str() == Some("little_endian"))
            .map(|(_, v)| matches!(v, Value::Bool(true)));
        if little == Some(false) {
            bail!("a big-endian legacy checkpoint; only little-endian is read");
        }
    }
    let root = next("object", &mut pos)?;
    let keys = next("storage keys", &mut pos)?;
    let Value::List(keys) = keys else {
        bail!("legacy checkpoint: the storage keys are not a list");
    };
    let refs: HashMap<String, StorageRef> = storages_of(&root)
        .into_iter()
        .map(|s| (s.key.clone(), s))
        .collect();
    let mut storages = HashMap::new();
    for key in keys.borrow().iter() {
        let key = match key {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            _ => bail!("legacy checkpoint: a storage key that is not a string"),
        };
        let storage = refs
            .get(&key)
            .with_context(|| format!("storage {key} is listed but no tensor uses it"))?;
        let truncated = || format!("storage {key}: the file ends inside it (truncated)");
        let count = bytes.get(pos..pos + 8).with_context(truncated)?;
        let count = u64::from_le_bytes(count.try_into().unwrap()) as usize;
        pos += 8;
        let len = count
            .checked_mul(storage.dtype.size())
            .with_context(truncated)?;
        let end = pos.checked_add(len).with_context(truncated)?;
        let data = bytes.get(pos..end).with_context(truncated)?;
        pos = end;
        check_storage_len(storage, len)?;
        storages.insert(key, data.to_vec());
    }
    Ok((root, storages))
}

/// The state_dict in a checkpoint: the top object, or the dict under `state_dict`
/// or `model` (training scripts' `{"epoch": .., "model": ..}`).
fn find_state_dict(root: &Value) -> Result<(String, Vec<(String, Value)>)> {
    if let Some(dict) = tensors_dict(root)? {
        return Ok((String::new(), dict));
    }
    let Value::Dict(top) = root else {
        bail!("the checkpoint holds no dict of tensors (a state_dict)");
    };
    for key in ["state_dict", "model"] {
        let found = top
            .borrow()
            .iter()
            .find_map(|(k, v)| (k.as_str() == Some(key)).then(|| v.clone()));
        if let Some(value) = found
            && let Some(dict) = tensors_dict(&value)?
        {
            return Ok((key.to_string(), dict));
        }
    }
    let keys: Vec<String> = top
        .borrow()
        .iter()
        .map(|(k, _)| k.as_str().unwrap_or("?").to_string())
        .collect();
    bail!(
        "no state_dict: the checkpoint is a dict with keys [{}] that are not all tensors, \
         and no `state_dict` or `model` key holds one",
        keys.join(", ")
    )
}

/// `value` as (name, tensor) pairs when it is a non-empty dict of str → tensor.
fn tensors_dict(value: &Value) -> Result<Option<Vec<(String, Value)>>> {
    let Value::Dict(dict) = value else {
        return Ok(None);
    };
    let dict = dict.borrow();
    if dict.is_empty() || !dict.iter().all(|(_, v)| matches!(v, Value::Tensor(_))) {
        return Ok(None);
    }
    dict.iter()
        .map(|(k, v)| match k {
            Value::Str(name) => Ok((name.clone(), v.clone())),
            _ => bail!("a state_dict key that is not a string"),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Copies a strided view of a storage out in row-major order.
fn materialise(t: &TensorRef, storage: &[u8]) -> Result<Tensor> {
    let dtype = t.storage.dtype;
    // Checked per tensor, not only per storage when it is read: two tensors
    // may name one storage key with different element counts or types, and
    // the storage is read (and checked) for the first only (fuzzing found it).
    check_storage_len(&t.storage, storage.len())?;
    // Checked arithmetic throughout: sizes and strides are the file's word.
    let out_of_range = || {
        anyhow::anyhow!(
            "size {:?}, stride {:?} and offset {} do not fit a storage of {} elements",
            t.size,
            t.stride,
            t.offset,
            t.storage.numel
        )
    };
    let numel = t
        .size
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(out_of_range)?;
    // A stride-0 (expanded) view can describe more elements than it stores;
    // state_dicts do not hold those, and a huge one must not be allocated.
    if numel > t.storage.numel {
        return Err(out_of_range());
    }
    let base = t
        .storage
        .view_offset
        .checked_add(t.offset)
        .ok_or_else(out_of_range)?;
    // The farthest element the view reaches must lie inside the storage.
    if numel > 0 {
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(base, |acc, (n, s)| {
                acc.checked_add((n - 1).checked_mul(*s)?)
            })
            .ok_or_else(out_of_range)?;
        if last >= t.storage.numel {
            bail!(
                "size {:?}, stride {:?} and offset {} reach element {last} of a storage of {}",
                t.size,
                t.stride,
                t.offset,
                t.storage.numel
            );
        }
    }
    let mut contiguous = 1;
    let is_contiguous = t.size.iter().zip(&t.stride).rev().all(|(&n, &s)| {
        let ok = n == 1 || s == contiguous;
        contiguous *= n;
        ok
    });
    if is_contiguous {
        // The usual case, one pass over the storage's bytes.
        let values = (base..base + numel)
            .map(|at| dtype.read(storage, at) as f32)
            .collect();
        return Ok(Tensor {
            dtype,
            shape: t.size.clone(),
            values,
        });
    }
    let mut values = Vec::with_capacity(numel);
    let mut index = vec![0usize; t.size.len()];
    for _ in 0..numel {
        let at = base
            + index
                .iter()
                .zip(&t.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        values.push(dtype.read(storage, at) as f32);
        // Advance the row-major counter.
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < t.size[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(Tensor {
        dtype,
        shape: t.size.clone(),
        values,
    })
}
