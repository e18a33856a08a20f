//! Dropping what a rewrite left unread.

use std::collections::HashSet;

use tract_onnx::pb::{GraphProto, NodeProto};

/// Drops the nodes for which `which` holds and whose outputs nothing reads (no
/// node, no graph output, nothing in `keep`), until none is left. ONNX nodes
/// have no side effects.
pub fn drop_unread_nodes(
    graph: &mut GraphProto,
    keep: &[&str],
    which: impl Fn(&NodeProto) -> bool,
) {
    loop {
        let read: HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().map(String::as_str))
            .chain(graph.output.iter().map(|o| o.name.as_str()))
            .chain(keep.iter().copied())
            .collect();
        let unread: Vec<bool> = graph
            .node
            .iter()
            .map(|n| which(n) && !n.output.iter().any(|o| read.contains(o.as_str())))
            .collect();
        if !unread.contains(&true) {
            return;
        }
        let mut unread = unread.into_iter();
        graph.node.retain(|_| !unread.next().unwrap_or(false));
    }
}

/// Drops initializers no node reads (and their graph-input entries, which old
/// exporters add for every weight).
pub fn drop_unused_initializers(graph: &mut GraphProto) {
    let used: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let dropped: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| !used.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();
    graph.initializer.retain(|t| !dropped.contains(&t.name));
    graph.input.retain(|v| !dropped.contains(&v.name));
}

#[cfg(test)]
mod tests {
    use super::super::{node, tensor};
    use super::*;
    use tract_onnx::pb::ValueInfoProto;

    /// x → a → y, and a dead chain x → b → c with a dead Constant k.
    fn graph() -> GraphProto {
        GraphProto {
            node: vec![
                node("Relu", "a", &["x"], &["y"]),
                node("Relu", "b", &["x"], &["b"]),
                node("Neg", "c", &["b", "w"], &["c"]),
                node("Constant", "k", &[], &["k"]),
            ],
            initializer: vec![tensor::float_tensor("w", &[], &[1.0])],
            input: vec![ValueInfoProto {
                name: "w".into(),
                ..Default::default()
            }],
            output: vec![ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn names(graph: &GraphProto) -> Vec<&str> {
        graph.node.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn dead_chains_go_whole_unless_kept() {
        let mut g = graph();
        drop_unread_nodes(&mut g, &[], |_| true);
        assert_eq!(names(&g), ["a"]);
        drop_unused_initializers(&mut g);
        assert!(g.initializer.is_empty() && g.input.is_empty());
        let mut g = graph();
        drop_unread_nodes(&mut g, &["b"], |_| true);
        assert_eq!(names(&g), ["a", "b"]);
    }

    #[test]
    fn only_the_chosen_kind_goes() {
        let mut g = graph();
        drop_unread_nodes(&mut g, &[], |n| n.op_type == "Constant");
        assert_eq!(names(&g), ["a", "b", "c"]);
        drop_unused_initializers(&mut g);
        assert_eq!(g.initializer.len(), 1);
    }
}
