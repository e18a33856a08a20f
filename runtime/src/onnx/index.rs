//! Where each tensor of a graph is made and read.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{GraphProto, TensorProto};

/// Producers, consumers and constants of a graph, by tensor name. Node and
/// initializer positions are those of the graph the index was made from; it
/// owns its names, so the graph can be changed while it is read (appending
/// initializers keeps it valid).
#[derive(Debug, Clone)]
pub struct Index {
    initializers: HashMap<String, usize>,
    producer: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
    inputs: HashSet<String>,
    outputs: HashSet<String>,
}

impl Index {
    pub fn new(graph: &GraphProto) -> Index {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            for output in &node.output {
                producer.insert(output.clone(), i);
            }
            for input in node.input.iter().filter(|s| !s.is_empty()) {
                consumers.entry(input.clone()).or_default().push(i);
            }
        }
        let initializers: HashMap<String, usize> = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Index {
            // Old exporters list every weight as a graph input too.
            inputs: graph
                .input
                .iter()
                .map(|v| v.name.clone())
                .filter(|n| !initializers.contains_key(n))
                .collect(),
            outputs: graph.output.iter().map(|v| v.name.clone()).collect(),
            initializers,
            producer,
            consumers,
        }
    }

    /// The node that writes `tensor`.
    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.producer.get(tensor).copied()
    }

    /// The nodes that read `tensor`, a node once per input slot.
    pub fn consumers(&self, tensor: &str) -> &[usize] {
        self.consumers.get(tensor).map_or(&[], Vec::as_slice)
    }

    /// The node that alone reads `tensor`, which is not a graph output.
    pub fn only_consumer(&self, tensor: &str) -> Option<usize> {
        match self.consumers(tensor) {
            [one] if !self.is_graph_output(tensor) => Some(*one),
            _ => None,
        }
    }

    /// The graph's inputs that are not weights.
    pub fn graph_inputs(&self) -> &HashSet<String> {
        &self.inputs
    }

    pub fn is_graph_output(&self, tensor: &str) -> bool {
        self.outputs.contains(tensor)
    }

    pub fn is_initializer(&self, tensor: &str) -> bool {
        self.initializers.contains_key(tensor)
    }

    pub fn initializer<'g>(&self, graph: &'g GraphProto, tensor: &str) -> Option<&'g TensorProto> {
        Some(&graph.initializer[*self.initializers.get(tensor)?])
    }

    /// A constant's value: an initializer, the output of a `Constant` node
    /// (PyTorch exports Clip's bounds that way), or an `Identity` of either
    /// (PyTorch exports weights shared by name that way, as ResNets' are).
    pub fn constant<'g>(&self, graph: &'g GraphProto, tensor: &str) -> Option<&'g TensorProto> {
        if let Some(t) = self.initializer(graph, tensor) {
            return Some(t);
        }
        let node = &graph.node[self.producer(tensor)?];
        match node.op_type.as_str() {
            "Constant" => super::attr::tensor_of(node, "value"),
            "Identity" => self.constant(graph, node.input.first()?),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{node, tensor};
    use super::*;
    use tract_onnx::pb::ValueInfoProto;

    /// x → a → (b, c); "k" is a Constant node, "w" an initializer and a graph input.
    fn graph() -> GraphProto {
        let value = |name: &str| ValueInfoProto {
            name: name.into(),
            ..Default::default()
        };
        let mut k = node("Constant", "k", &[], &["k"]);
        k.attribute.push(super::super::attr::tensor(
            "value",
            tensor::float_tensor("", &[], &[6.0]),
        ));
        GraphProto {
            node: vec![
                k,
                node("Relu", "a", &["x"], &["a"]),
                node("Add", "b", &["a", "w"], &["b"]),
                node("Mul", "c", &["a", "a"], &["c"]),
                node("Neg", "d", &["b"], &["d"]),
            ],
            initializer: vec![tensor::float_tensor("w", &[], &[1.0])],
            input: vec![value("x"), value("w")],
            output: vec![value("c"), value("d")],
            ..Default::default()
        }
    }

    #[test]
    fn consumers_count_each_input_slot() {
        let index = Index::new(&graph());
        assert_eq!(index.producer("a"), Some(1));
        assert_eq!(index.producer("x"), None);
        assert_eq!(index.consumers("a"), [2, 3, 3]);
        assert_eq!(index.consumers("nothing"), [] as [usize; 0]);
    }

    #[test]
    fn only_consumer_excludes_shared_tensors_and_graph_outputs() {
        let index = Index::new(&graph());
        assert_eq!(index.only_consumer("b"), Some(4));
        assert_eq!(index.only_consumer("a"), None);
        assert_eq!(index.only_consumer("c"), None);
        assert_eq!(index.only_consumer("d"), None);
    }

    #[test]
    fn weights_are_constants_not_inputs() {
        let g = graph();
        let index = Index::new(&g);
        assert_eq!(index.graph_inputs(), &HashSet::from(["x".to_string()]));
        assert!(index.is_initializer("w") && !index.is_initializer("k"));
        assert_eq!(index.initializer(&g, "w").unwrap().name, "w");
        assert!(index.initializer(&g, "k").is_none());
        assert_eq!(
            tensor::floats(index.constant(&g, "k").unwrap()).unwrap(),
            [6.0]
        );
        assert!(index.constant(&g, "a").is_none());
    }
}
