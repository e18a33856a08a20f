//! Test support: writes state_dicts the way `torch.save` does, as a zip archive
//! or a legacy stream, so the reader is checked on files it did not make itself
//! from pickles it did not parse. Standalone (std and `zip` only) so the
//! command-line tests can include it too.

#![allow(dead_code)]

use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    F32,
    F16,
    I64,
}

/// One tensor to write; `values` in row-major order of `shape`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    pub stored: Stored,
    /// Store a 2-D tensor as the transpose of its storage (strides swapped), as
    /// `w.t()` saves: a non-contiguous view the reader must copy out.
    pub transposed: bool,
    /// Store it at this many elements into a larger storage (a slice's offset).
    pub offset: usize,
}

impl Entry {
    pub fn new(name: &str, shape: &[usize], values: Vec<f32>, stored: Stored) -> Entry {
        Entry {
            name: name.to_string(),
            shape: shape.to_vec(),
            values,
            stored,
            transposed: false,
            offset: 0,
        }
    }
}

/// A pickle, opcode by opcode (protocol 2, as torch.save writes).
#[derive(Default)]
pub struct Pickle(pub Vec<u8>);

impl Pickle {
    pub fn proto(mut self) -> Self {
        self.0.extend([0x80, 2]);
        self
    }
    pub fn global(mut self, module: &str, name: &str) -> Self {
        self.0.push(b'c');
        self.0.extend(format!("{module}\n{name}\n").bytes());
        self
    }
    pub fn str(mut self, s: &str) -> Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.bytes());
        self
    }
    pub fn int(mut self, i: i32) -> Self {
        self.0.push(b'J');
        self.0.extend(i.to_le_bytes());
        self
    }
    pub fn op(mut self, op: u8) -> Self {
        self.0.push(op);
        self
    }
    /// Bytes as they are (an opcode's argument).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend(bytes);
        self
    }
    pub fn ints_tuple(mut self, values: &[usize]) -> Self {
        self.0.push(b'(');
        for &v in values {
            self = self.int(v as i32);
        }
        self.op(b't')
    }
    pub fn stop(self) -> Vec<u8> {
        self.op(b'.').0
    }
}

const MARK: u8 = b'(';
const TUPLE: u8 = b't';
const REDUCE: u8 = b'R';
const EMPTY_TUPLE: u8 = b')';
const BINPERSID: u8 = b'Q';
const SETITEMS: u8 = b'u';
const NEWFALSE: u8 = 0x89;
const NONE: u8 = b'N';

fn storage_type(stored: Stored) -> &'static str {
    match stored {
        Stored::F32 => "FloatStorage",
        Stored::F16 => "HalfStorage",
        Stored::I64 => "LongStorage",
    }
}

/// One storage per entry: the bytes, its element count, the view's strides.
struct Layout {
    bytes: Vec<u8>,
    numel: usize,
    stride: Vec<usize>,
}

fn layout(e: &Entry) -> Layout {
    let mut order: Vec<f32> = e.values.clone();
    let mut stride = contiguous_strides(&e.shape);
    if e.transposed {
        assert_eq!(e.shape.len(), 2, "only 2-D tensors are written transposed");
        let (r, c) = (e.shape[0], e.shape[1]);
        // The storage holds the transpose (c × r), the view reads it back as r × c.
        order = (0..c)
            .flat_map(|j| (0..r).map(move |i| (i, j)))
            .map(|(i, j)| e.values[i * c + j])
            .collect();
        stride = vec![1, r];
    }
    // Padding before the view (a shared storage's earlier tensors).
    let mut all = vec![7.0; e.offset];
    all.extend(order);
    let bytes = all
        .iter()
        .flat_map(|&v| match e.stored {
            Stored::F32 => v.to_le_bytes().to_vec(),
            Stored::F16 => half::f16::from_f32(v).to_le_bytes().to_vec(),
            Stored::I64 => (v as i64).to_le_bytes().to_vec(),
        })
        .collect();
    Layout {
        bytes,
        numel: all.len(),
        stride,
    }
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// The state_dict pickle; `nest` puts it under that key of a checkpoint dict.
fn state_dict_pickle(
    entries: &[Entry],
    layouts: &[Layout],
    legacy: bool,
    nest: Option<&str>,
) -> Vec<u8> {
    let mut p = Pickle::default().proto();
    if let Some(key) = nest {
        p = p.op(b'}').op(MARK).str("epoch").int(3).str(key);
    }
    p = p
        .global("collections", "OrderedDict")
        .op(EMPTY_TUPLE)
        .op(REDUCE)
        .op(MARK);
    for (i, (e, l)) in entries.iter().zip(layouts).enumerate() {
        p = tensor(p.str(&e.name), e, l, &i.to_string(), legacy);
    }
    p = p.op(SETITEMS);
    if nest.is_some() {
        p = p.op(SETITEMS);
    }
    p.stop()
}

/// `_rebuild_tensor_v2(storage key, …)` of one entry.
fn tensor(p: Pickle, e: &Entry, l: &Layout, key: &str, legacy: bool) -> Pickle {
    let mut p = p
        .global("torch._utils", "_rebuild_tensor_v2")
        .op(MARK)
        .op(MARK)
        .str("storage")
        .global("torch", storage_type(e.stored))
        .str(key)
        .str("cpu")
        .int(l.numel as i32);
    if legacy {
        p = p.op(NONE);
    }
    p.op(TUPLE)
        .op(BINPERSID)
        .int(e.offset as i32)
        .ints_tuple(&e.shape)
        .ints_tuple(&l.stride)
        .op(NEWFALSE)
        .global("collections", "OrderedDict")
        .op(EMPTY_TUPLE)
        .op(REDUCE)
        .op(TUPLE)
        .op(REDUCE)
}

/// A module as torch.save pickles one: `cls.__new__(cls)` (NEWOBJ), then BUILD
/// with its __dict__: `_parameters`, `_buffers` and `_modules` (each an
/// OrderedDict of raw pickle fragments), then plain attributes (fragments).
pub struct Module<'a> {
    pub class: (&'a str, &'a str),
    pub parameters: Vec<(&'a str, Pickle)>,
    pub buffers: Vec<(&'a str, Pickle)>,
    pub modules: Vec<(&'a str, Module<'a>)>,
    pub attributes: Vec<(&'a str, Pickle)>,
}

impl Module<'_> {
    pub fn pickle(self) -> Pickle {
        let mut p = Pickle::default()
            .global(self.class.0, self.class.1)
            .op(EMPTY_TUPLE)
            .op(0x81) // NEWOBJ
            .op(b'}')
            .op(MARK)
            .str("training")
            .op(NEWFALSE);
        let ordered = |mut p: Pickle, key: &str, items: Vec<(&str, Pickle)>| {
            p = p
                .str(key)
                .global("collections", "OrderedDict")
                .op(EMPTY_TUPLE)
                .op(REDUCE);
            if items.is_empty() {
                return p;
            }
            p = p.op(MARK);
            for (name, value) in items {
                p = p.str(name);
                p.0.extend(value.0);
            }
            p.op(SETITEMS)
        };
        p = ordered(p, "_parameters", self.parameters);
        p = ordered(p, "_buffers", self.buffers);
        p = p
            .str("_non_persistent_buffers_set")
            .global("__builtin__", "set")
            .op(b']')
            .op(0x85) // TUPLE1
            .op(REDUCE);
        let modules = self
            .modules
            .into_iter()
            .map(|(n, m)| (n, m.pickle()))
            .collect();
        p = ordered(p, "_modules", modules);
        for (name, value) in self.attributes {
            p = p.str(name);
            p.0.extend(value.0);
        }
        p.op(SETITEMS).op(b'b') // BUILD
    }
}

/// A tensor fragment for [`Module`], its storage keyed `key` (zip layout).
pub fn tensor_fragment(e: &Entry, key: &str) -> (Pickle, Vec<u8>) {
    let l = layout(e);
    let p = tensor(Pickle::default(), e, &l, key, false);
    (p, l.bytes)
}

/// A zip archive as torch.save (PyTorch ≥ 1.6) writes it, under `folder/`.
pub fn zip(entries: &[Entry], nest: Option<&str>) -> Vec<u8> {
    let layouts: Vec<Layout> = entries.iter().map(layout).collect();
    let pkl = state_dict_pickle(entries, &layouts, false, nest);
    let storages: Vec<(String, Vec<u8>)> = layouts
        .into_iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l.bytes))
        .collect();
    zip_archive("checkpoint", &pkl, &storages)
}

/// A zip archive holding `pkl` as its data.pkl and the given storages.
pub fn zip_archive(folder: &str, pkl: &[u8], storages: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut file = |name: String, bytes: &[u8]| {
        out.start_file(name, stored).unwrap();
        out.write_all(bytes).unwrap();
    };
    file(format!("{folder}/data.pkl"), pkl);
    file(format!("{folder}/byteorder"), b"little");
    for (key, bytes) in storages {
        file(format!("{folder}/data/{key}"), bytes);
    }
    file(format!("{folder}/version"), b"3\n");
    out.finish().unwrap().into_inner()
}

/// The legacy stream (PyTorch < 1.6, `_use_new_zipfile_serialization=False`).
pub fn legacy(entries: &[Entry], nest: Option<&str>) -> Vec<u8> {
    let layouts: Vec<Layout> = entries.iter().map(layout).collect();
    let mut out = legacy_header();
    out.extend(state_dict_pickle(entries, &layouts, true, nest));
    let mut keys = Pickle::default().proto().op(MARK);
    for i in 0..entries.len() {
        keys = keys.str(&i.to_string());
    }
    out.extend(keys.op(b'l').stop());
    for l in &layouts {
        out.extend((l.numel as u64).to_le_bytes());
        out.extend(&l.bytes);
    }
    out
}

/// Magic number, protocol version and sys_info pickles.
pub fn legacy_header() -> Vec<u8> {
    let mut out = Vec::new();
    // LONG1 of the 10-byte magic number 0x1950a86a20f9469cfc6c.
    let magic: u128 = 0x1950a86a20f9469cfc6c;
    out.extend([0x80, 2, 0x8a, 10]);
    out.extend(&magic.to_le_bytes()[..10]);
    out.push(b'.');
    out.extend(Pickle::default().proto().int(1001).stop());
    out.extend(
        Pickle::default()
            .proto()
            .op(b'}')
            .str("little_endian")
            .op(0x88)
            .op(b's')
            .stop(),
    );
    out
}
