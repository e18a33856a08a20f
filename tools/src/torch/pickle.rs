//! A pickle reader for PyTorch checkpoints that treats the stream as data.
//!
//! Why our own small VM rather than a crate:
//! - `serde-pickle` cannot resolve `persistent_id` (how every tensor points at its
//!   storage) and has no hook to refuse globals;
//! - `pytorch-reader` (burn) is only published as a pre-release, returns tensors in
//!   a `HashMap` (state_dict order, which `inspect` must print, is lost) and keeps
//!   unknown `REDUCE` calls as opaque values instead of refusing them.
//!
//! Here every `GLOBAL` is checked against an allow-list the moment it is read: a
//! name outside it is an error that names it. Allowed callables are never "called":
//! `REDUCE` on one of them builds the data it stands for (a dict, a tensor view of a
//! storage). A whole pickled model (Ultralytics' `.pt` files) is read the same
//! way: its module classes become inert [`Object`]s holding the state `BUILD`
//! gives them, never instances of anything. Nothing in a pickle can make this
//! code run anything.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::DType;

/// The globals a torch checkpoint pickle may name, and what each stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`: the state_dict itself and empty hook dicts.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor(storage, offset, size, stride)`: PyTorch 0.3's
    /// form, still found in old legacy-format downloads.
    RebuildTensor,
    /// `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`
    RebuildParameter,
    /// `torch.FloatStorage` and its siblings: only the element type is used.
    Storage(DType),
    /// `set` (`__builtin__.set` in protocol 2): a module's
    /// `_non_persistent_buffers_set`, read as a list.
    Set,
    /// A module class (`models.common.C3`, `torch.nn.modules.conv.Conv2d`): only
    /// its name is kept; an instance is a placeholder [`Object`].
    Class(String),
}

/// The packages whose classes a pickled model may name: YOLOv5's model code
/// (`models.yolo`, `models.common`, `models.experimental`) and torch's modules.
/// Only class names (a capital first letter) are accepted from them, and only
/// as `NEWOBJ` + `BUILD` build them: the placeholders hold data, and a
/// function from these packages (`models.common.autopad`) is still refused.
const MODULE_PACKAGES: [&str; 2] = ["models.", "torch.nn.modules."];

impl Global {
    fn resolve(module: &str, name: &str) -> Result<Global, String> {
        let global = match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("__builtin__" | "builtins", "set") => Global::Set,
            ("torch", storage) => match DType::from_storage(storage) {
                Some(dtype) => Global::Storage(dtype),
                None => return Err(refused(module, name)),
            },
            _ if MODULE_PACKAGES.iter().any(|p| module.starts_with(p))
                && name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                Global::Class(format!("{module}.{name}"))
            }
            _ => return Err(refused(module, name)),
        };
        Ok(global)
    }
}

fn refused(module: &str, name: &str) -> String {
    format!(
        "the pickle names {module}.{name}, which is not allowed in a checkpoint \
         (allowed: collections.OrderedDict, torch._utils._rebuild_tensor_v2, \
         torch._utils._rebuild_parameter, torch.*Storage, set, and the module classes \
         of models.* and torch.nn.modules.*); nothing was run"
    )
}

/// A pickled instance of a module class: its class name and the state `BUILD`
/// set (for an `nn.Module`, the dict of `_parameters`, `_modules`, attributes).
#[derive(Debug)]
pub struct Object {
    pub class: String,
    pub state: RefCell<Value>,
}

/// A storage a tensor points at: its bytes live outside the pickle (a zip entry
/// or the tail of a legacy file), found by `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: DType,
    /// Elements in the whole storage.
    pub numel: usize,
    /// Legacy files may hand out a view into a larger storage: its first element.
    pub view_offset: usize,
}

/// A tensor as the pickle describes it: a strided window on a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i128),
    // Read only through Debug, in error messages: a checkpoint's floats and
    // bytes (optimizer settings, say) are never weights.
    #[allow(dead_code)]
    Float(f64),
    Str(String),
    #[allow(dead_code)]
    Bytes(Vec<u8>),
    Tuple(Rc<Vec<Value>>),
    // Lists and dicts are shared, as in Python: the memo and the stack see the
    // same object, so items added after it was memoized are not lost.
    List(Rc<RefCell<Vec<Value>>>),
    /// Insertion order kept: a state_dict's order is its meaning for `inspect`.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Global),
    Storage(StorageRef),
    Tensor(Rc<TensorRef>),
    Object(Rc<Object>),
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Object(_) => "object",
        }
    }

    fn int(&self, what: &str) -> Result<i128, String> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(*b as i128),
            other => Err(format!("{what}: int expected, got {}", other.kind())),
        }
    }

    fn usize(&self, what: &str) -> Result<usize, String> {
        usize::try_from(self.int(what)?).map_err(|_| format!("{what}: out of range"))
    }

    fn items(&self, what: &str) -> Result<Vec<Value>, String> {
        match self {
            Value::Tuple(t) => Ok(t.to_vec()),
            Value::List(l) => Ok(l.borrow().clone()),
            other => Err(format!("{what}: tuple expected, got {}", other.kind())),
        }
    }

    fn usizes(&self, what: &str) -> Result<Vec<usize>, String> {
        self.items(what)?.iter().map(|v| v.usize(what)).collect()
    }
}

/// Reads one pickle from `data` starting at `*pos`; leaves `*pos` after its STOP
/// (a legacy checkpoint is several pickles back to back, then raw storages).
pub fn load(data: &[u8], pos: &mut usize) -> Result<Value, String> {
    let mut vm = Vm {
        data,
        pos: *pos,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        depths: HashMap::new(),
    };
    let value = vm
        .run()
        .map_err(|e| format!("pickle at byte {}: {e}", vm.pos))?;
    *pos = vm.pos;
    Ok(value)
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    /// Nesting depth of each container, by address: a state_dict nests a few
    /// levels, and a deeper pickle (a million nested tuples) would overflow the
    /// stack when walked or dropped, so it is refused as it is built.
    depths: HashMap<usize, usize>,
}

const MAX_DEPTH: usize = 64;

/// A container's identity (the memo shares containers, as Python does).
pub fn address(v: &Value) -> Option<usize> {
    match v {
        Value::Tuple(t) => Some(Rc::as_ptr(t) as *const () as usize),
        Value::List(l) => Some(Rc::as_ptr(l) as *const () as usize),
        Value::Dict(d) => Some(Rc::as_ptr(d) as *const () as usize),
        Value::Object(o) => Some(Rc::as_ptr(o) as *const () as usize),
        _ => None,
    }
}

impl Vm<'_> {
    fn depth(&self, v: &Value) -> usize {
        address(v).map_or(0, |a| self.depths.get(&a).copied().unwrap_or(1))
    }

    /// Records that `container` now also holds `items`; `fresh` for a container
    /// just made (an old entry at a reused address is not its own).
    fn nest(&mut self, container: &Value, items: &[Value], fresh: bool) -> Result<(), String> {
        let Some(a) = address(container) else {
            return Ok(());
        };
        if fresh {
            self.depths.remove(&a);
        }
        let inner = items.iter().map(|v| self.depth(v)).max().unwrap_or(0);
        let depth = self.depths.get(&a).copied().unwrap_or(1).max(inner + 1);
        if depth > MAX_DEPTH {
            return Err(format!("values nested deeper than {MAX_DEPTH} levels"));
        }
        self.depths.insert(a, depth);
        Ok(())
    }

    /// Pushes a container made from `items`.
    fn push_new(&mut self, v: Value, items: &[Value]) -> Result<(), String> {
        self.nest(&v, items, true)?;
        self.stack.push(v);
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| "truncated (the stream ends inside an opcode)".to_string())?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated (no end of line)")?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(text)
    }

    fn text(&mut self, n: usize) -> Result<String, String> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string that is not UTF-8".to_string())
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "stack underflow".to_string())
    }

    /// The values pushed since the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("no MARK on the stack")?;
        if mark > self.stack.len() {
            return Err("MARK above the stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, key: u32) -> Result<Value, String> {
        self.memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("memo key {key} read before it was written"))
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        let top = self.stack.last().ok_or("stack underflow")?.clone();
        self.memo.insert(key, top);
        Ok(())
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("pickle protocol {proto} (at most 5 is known)"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.stack.push(top);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i128));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i128));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i128));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let v = self.long(n)?;
                    self.stack.push(v);
                }
                0x8b => {
                    let n = self.u32()? as usize;
                    let v = self.long(n)?;
                    self.stack.push(v);
                }
                b'I' => {
                    let line = self.line()?;
                    let v = match line.as_str() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => Value::Int(s.parse().map_err(|_| format!("INT {s:?}"))?),
                    };
                    self.stack.push(v);
                }
                b'L' => {
                    let line = self.line()?;
                    let digits = line.trim_end_matches('L');
                    let v = digits.parse().map_err(|_| format!("LONG {line:?}"))?;
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v));
                }
                b'F' => {
                    let line = self.line()?;
                    let v = line.parse().map_err(|_| format!("FLOAT {line:?}"))?;
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.text(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.text(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "string too long")?;
                    let s = self.text(n)?;
                    self.stack.push(Value::Str(s));
                }
                // Python 2 `str`: old legacy checkpoints spell keys this way.
                b'T' => {
                    let n = self.u32()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s));
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let s = String::from_utf8_lossy(self.take(n)?).into_owned();
                    self.stack.push(Value::Str(s));
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                0x8e => {
                    let n = usize::try_from(self.u64()?).map_err(|_| "bytes too long")?;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                b')' => self.push_new(Value::Tuple(Rc::new(Vec::new())), &[])?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_new(Value::Tuple(Rc::new(items.clone())), &items)?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_new(Value::Tuple(Rc::new(items.clone())), &items)?;
                }
                b']' => self.push_new(Value::List(Rc::default()), &[])?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_new(Value::List(Rc::new(RefCell::new(items.clone()))), &items)?;
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => self.push_new(Value::Dict(Rc::default()), &[])?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = Value::Dict(Rc::default());
                    set_items(&dict, items.clone())?;
                    self.push_new(dict, &items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                b'p' => {
                    let line = self.line()?;
                    let k = line.parse().map_err(|_| format!("PUT {line:?}"))?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let k = self.u32()?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'g' => {
                    let line = self.line()?;
                    let k = line.parse().map_err(|_| format!("GET {line:?}"))?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack
                        .push(Value::Global(Global::resolve(&module, &name)?));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (module.as_str(), name.as_str()) else {
                        return Err("STACK_GLOBAL expects two strings".into());
                    };
                    self.stack
                        .push(Value::Global(Global::resolve(module, name)?));
                }
                // INST and OBJ name or build instances of arbitrary classes.
                b'i' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    return Err(refused(&module, &name));
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = persistent_load(&pid)?;
                    self.stack.push(storage);
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let value = match (&callable, op) {
                        (Value::Global(Global::Class(class)), 0x81) => new_object(class, &args)?,
                        _ => reduce(&callable, &args)?,
                    };
                    let items = match &value {
                        Value::Dict(d) => d.borrow().iter().map(|(_, v)| v.clone()).collect(),
                        _ => Vec::new(),
                    };
                    self.push_new(value, &items)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    match self.top()?.clone() {
                        // OrderedDict's attributes (a state_dict's `_metadata`,
                        // module versions) and tensors' Python attributes: not
                        // needed to read the weights.
                        Value::Dict(_) | Value::Tensor(_) => {}
                        // A module's __dict__ (or `(dict, slots)`), kept as data.
                        target @ Value::Object(_) => {
                            let state = match &state {
                                Value::Tuple(t) if matches!(t.first(), Some(Value::Dict(_))) => {
                                    t[0].clone()
                                }
                                _ => state,
                            };
                            self.nest(&target, std::slice::from_ref(&state), false)?;
                            if let Value::Object(object) = target {
                                object.state.replace(state);
                            }
                        }
                        target => {
                            return Err(format!(
                                "BUILD on a {} (only dicts, tensors and module objects take state)",
                                target.kind()
                            ));
                        }
                    }
                }
                other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
            }
        }
    }

    fn long(&mut self, n: usize) -> Result<Value, String> {
        let bytes = self.take(n)?;
        if n > 16 {
            return Err(format!("an integer of {n} bytes"));
        }
        let mut buf = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
            [0xff; 16]
        } else {
            [0; 16]
        };
        buf[..n].copy_from_slice(bytes);
        Ok(Value::Int(i128::from_le_bytes(buf)))
    }

    fn append(&mut self, items: Vec<Value>) -> Result<(), String> {
        let top = self.top()?.clone();
        self.nest(&top, &items, false)?;
        match top {
            Value::List(list) => {
                list.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(format!("APPEND to a {}", other.kind())),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        let top = self.top()?.clone();
        self.nest(&top, &items, false)?;
        set_items(&top, items)
    }
}

fn set_items(target: &Value, items: Vec<Value>) -> Result<(), String> {
    let Value::Dict(dict) = target else {
        return Err(format!("SETITEM on a {}", target.kind()));
    };
    if !items.len().is_multiple_of(2) {
        return Err("SETITEMS with an odd number of values".into());
    }
    let mut dict = dict.borrow_mut();
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        // A key set twice keeps its first place, as a Python dict does.
        match dict.iter_mut().find(|(k, _)| same_key(k, &key)) {
            Some(slot) => slot.1 = value,
            None => dict.push((key, value)),
        }
    }
    Ok(())
}

fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(a), Value::Str(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        _ => false,
    }
}

/// torch.save's persistent id of a storage:
/// `('storage', storage_type, key, location, numel)` in a zip archive, with a
/// fifth element `view_metadata` (`None` or `(view_key, offset, size)`) in the
/// legacy format.
fn persistent_load(pid: &Value) -> Result<Value, String> {
    let items = pid.items("persistent id")?;
    match items.first().and_then(Value::as_str) {
        Some("storage") => {}
        Some(other) => return Err(format!("persistent id of kind {other:?} (not a storage)")),
        None => return Err("a persistent id that is not ('storage', ...)".into()),
    }
    let [_, storage_type, key, _location, numel, rest @ ..] = items.as_slice() else {
        return Err("a storage persistent id with fewer than 5 fields".into());
    };
    let Value::Global(Global::Storage(dtype)) = storage_type else {
        return Err(format!(
            "storage type: a torch.*Storage expected, got {}",
            storage_type.kind()
        ));
    };
    let key = match key {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("storage key: {}", other.kind())),
    };
    let mut storage = StorageRef {
        key,
        dtype: *dtype,
        numel: numel.usize("storage size")?,
        view_offset: 0,
    };
    if let Some(view) = rest.first().filter(|v| !matches!(v, Value::None)) {
        let view = view.items("storage view")?;
        let [_view_key, offset, size] = view.as_slice() else {
            return Err("storage view metadata of unexpected length".into());
        };
        storage.view_offset = offset.usize("storage view offset")?;
        let size = size.usize("storage view size")?;
        if storage
            .view_offset
            .checked_add(size)
            .is_none_or(|end| end > storage.numel)
        {
            return Err(format!("storage {}: view past its end", storage.key));
        }
    }
    Ok(Value::Storage(storage))
}

/// `cls.__new__(cls)` as torch.save pickles a module: a placeholder of the
/// class's name; `BUILD` fills in its state.
fn new_object(class: &str, args: &Value) -> Result<Value, String> {
    if !args.items("NEWOBJ arguments")?.is_empty() {
        return Err(format!(
            "{class} built with arguments (a module takes none)"
        ));
    }
    Ok(Value::Object(Rc::new(Object {
        class: class.to_string(),
        state: RefCell::new(Value::None),
    })))
}

fn reduce(callable: &Value, args: &Value) -> Result<Value, String> {
    let Value::Global(global) = callable else {
        return Err(format!("REDUCE on a {} (not a global)", callable.kind()));
    };
    let args = args.items("call arguments")?;
    match global {
        Global::OrderedDict => {
            let dict = Value::Dict(Rc::default());
            // OrderedDict() or OrderedDict([(k, v), ...])
            if let Some(pairs) = args.first() {
                for pair in pairs.items("OrderedDict items")? {
                    set_items(&dict, pair.items("OrderedDict item")?)?;
                }
            }
            Ok(dict)
        }
        Global::RebuildTensor | Global::RebuildTensorV2 => {
            let [storage, offset, size, stride, ..] = args.as_slice() else {
                return Err("_rebuild_tensor with fewer than 4 arguments".into());
            };
            let Value::Storage(storage) = storage else {
                return Err(format!(
                    "_rebuild_tensor: a storage expected, got {}",
                    storage.kind()
                ));
            };
            let size = size.usizes("tensor size")?;
            let stride = stride.usizes("tensor stride")?;
            if size.len() != stride.len() {
                return Err("tensor size and stride of different lengths".into());
            }
            Ok(Value::Tensor(Rc::new(TensorRef {
                storage: storage.clone(),
                offset: offset.usize("storage offset")?,
                size,
                stride,
            })))
        }
        Global::RebuildParameter => match args.first() {
            Some(tensor @ Value::Tensor(_)) => Ok(tensor.clone()),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Global::Storage(dtype) => Err(format!(
            "a call of torch.{}Storage (storages come by persistent id)",
            dtype.storage_name()
        )),
        // set([items]): kept as the list of its items.
        Global::Set => match args.first() {
            None => Ok(Value::List(Rc::default())),
            Some(items) => Ok(Value::List(Rc::new(RefCell::new(
                items.items("set items")?,
            )))),
        },
        Global::Class(class) => Err(format!(
            "a call of {class}: a module class is only rebuilt as torch.save writes \
             modules (NEWOBJ, then BUILD), never called"
        )),
    }
}
