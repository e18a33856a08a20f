//! Reading and building node attributes.

use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};

pub fn find<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub fn int(node: &NodeProto, name: &str) -> Option<i64> {
    find(node, name).map(|a| a.i)
}

pub fn float(node: &NodeProto, name: &str) -> Option<f32> {
    find(node, name).map(|a| a.f)
}

pub fn ints<'n>(node: &'n NodeProto, name: &str) -> Option<&'n [i64]> {
    find(node, name).map(|a| a.ints.as_slice())
}

pub fn floats<'n>(node: &'n NodeProto, name: &str) -> Option<&'n [f32]> {
    find(node, name).map(|a| a.floats.as_slice())
}

pub fn string<'n>(node: &'n NodeProto, name: &str) -> Option<&'n [u8]> {
    find(node, name).map(|a| a.s.as_slice())
}

pub fn tensor_of<'n>(node: &'n NodeProto, name: &str) -> Option<&'n TensorProto> {
    find(node, name)?.t.as_ref()
}

/// Sets `attribute`, replacing one of the same name.
pub fn set(node: &mut NodeProto, attribute: AttributeProto) {
    node.attribute.retain(|a| a.name != attribute.name);
    node.attribute.push(attribute);
}

fn typed(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: kind as i32,
        ..Default::default()
    }
}

pub fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        i,
        ..typed(name, AttributeType::Int)
    }
}

pub fn float_attr(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        f,
        ..typed(name, AttributeType::Float)
    }
}

pub fn ints_attr(name: &str, ints: Vec<i64>) -> AttributeProto {
    AttributeProto {
        ints,
        ..typed(name, AttributeType::Ints)
    }
}

pub fn floats_attr(name: &str, floats: Vec<f32>) -> AttributeProto {
    AttributeProto {
        floats,
        ..typed(name, AttributeType::Floats)
    }
}

pub fn tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t),
        ..typed(name, AttributeType::Tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{node, tensor::float_tensor};
    use super::*;

    #[test]
    fn attributes_read_back_as_written() {
        let mut n = node("Conv", "c", &["x"], &["y"]);
        n.attribute = vec![
            int_attr("group", 2),
            float_attr("alpha", 0.5),
            ints_attr("pads", vec![1, 1, 0, 0]),
            floats_attr("scales", vec![0.25]),
            tensor("w", float_tensor("w", &[], &[3.0])),
        ];
        assert_eq!(int(&n, "group"), Some(2));
        assert_eq!(float(&n, "alpha"), Some(0.5));
        assert_eq!(ints(&n, "pads"), Some(&[1, 1, 0, 0][..]));
        assert_eq!(floats(&n, "scales"), Some(&[0.25][..]));
        assert_eq!(tensor_of(&n, "w").unwrap().name, "w");
        assert_eq!(int(&n, "missing"), None);
        assert_eq!(find(&n, "group").unwrap().r#type, AttributeType::Int as i32);
    }

    #[test]
    fn set_replaces_an_attribute_of_the_same_name() {
        let mut n = node("DequantizeLinear", "dq", &[], &[]);
        set(&mut n, int_attr("axis", 1));
        set(&mut n, int_attr("axis", 0));
        assert_eq!(n.attribute.len(), 1);
        assert_eq!(int(&n, "axis"), Some(0));
    }
}
