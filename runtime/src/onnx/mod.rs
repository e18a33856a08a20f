//! ONNX at the protobuf level: the one toolkit both sides of the QDQ convention
//! use. `quantize` writes QDQ files through it ([`qdq`] arithmetic, tensors,
//! nodes); the int8 rewrite ([`crate::model::int8`]) reads them back through the
//! same helpers, so the two halves cannot drift apart.
//!
//! tract parses ONNX into its own graph, which it cannot write back as ONNX; a
//! quantized model must stay a standard ONNX file (ONNX Runtime and Netron read
//! it), so both rewrites work on tract-onnx's prost messages directly.

pub mod attr;
mod index;
mod prune;
pub mod qdq;
pub mod tensor;

use std::path::Path;

use prost::Message;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};
use tract_onnx::prelude::Framework;

pub use index::Index;
pub use prune::{drop_unread_nodes, drop_unused_initializers};

use crate::error::{Error, Result};

/// A graph that does not hold what a helper expected; the message names the
/// node or tensor at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct GraphError(pub String);

/// The int8 rewrite records its reasons as plain text (see
/// [`crate::model::int8::Summary`]).
impl From<GraphError> for String {
    fn from(e: GraphError) -> String {
        e.0
    }
}

/// Reads an ONNX file; it must hold a graph.
pub fn load(path: &Path) -> Result<ModelProto> {
    let proto = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| Error::model(path, &e))?;
    if proto.graph.is_none() {
        return Err(Error::Model {
            path: path.into(),
            message: "the ONNX file holds no graph".into(),
        });
    }
    Ok(proto)
}

pub fn save(proto: &ModelProto, path: &Path) -> Result<()> {
    std::fs::write(path, proto.encode_to_vec()).map_err(|e| Error::io(path, e))
}

/// The graph of a model returned by [`load`], which checked that it has one.
pub fn graph_mut(proto: &mut ModelProto) -> &mut GraphProto {
    proto.graph.as_mut().expect("load checks for a graph")
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Puts each `(index, node)` of `replaced` in place of the node at that index,
/// then removes the nodes at `removed` (those a rewrite folded in).
pub fn replace_nodes(
    graph: &mut GraphProto,
    replaced: Vec<(usize, NodeProto)>,
    removed: &std::collections::HashSet<usize>,
) {
    for (i, new) in replaced {
        graph.node[i] = new;
    }
    let old = std::mem::take(&mut graph.node);
    graph.node = old
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .map(|(_, n)| n)
        .collect();
}
