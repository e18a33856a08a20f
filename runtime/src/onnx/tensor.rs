//! Reading and building `TensorProto` constants.

use tract_onnx::pb::TensorProto;
use tract_onnx::pb::tensor_proto::DataType;

use super::GraphError;

/// ONNX's name of a data type code (`FLOAT`, `INT8`, …).
pub fn type_name(data_type: i32) -> &'static str {
    DataType::try_from(data_type).map_or("unknown", |t| t.as_str_name())
}

/// A float tensor's values, whichever of ONNX's two encodings it uses.
pub fn floats(tensor: &TensorProto) -> Result<Vec<f32>, GraphError> {
    if tensor.data_type != DataType::Float as i32 {
        return Err(GraphError(format!(
            "tensor {}: float expected, got {}",
            tensor.name,
            type_name(tensor.data_type)
        )));
    }
    if !tensor.float_data.is_empty() {
        return Ok(tensor.float_data.clone());
    }
    Ok(le_words(tensor)?.map(f32::from_le_bytes).collect())
}

/// An int8, uint8 or int32 tensor's values, widened.
pub fn integers(tensor: &TensorProto) -> Result<Vec<i64>, GraphError> {
    let raw = &tensor.raw_data;
    let values = match DataType::try_from(tensor.data_type) {
        Ok(DataType::Int8) if !raw.is_empty() => raw.iter().map(|&b| b as i8 as i64).collect(),
        Ok(DataType::Uint8) if !raw.is_empty() => raw.iter().map(|&b| b as i64).collect(),
        Ok(DataType::Int32) if !raw.is_empty() => le_words(tensor)?
            .map(|b| i32::from_le_bytes(b) as i64)
            .collect(),
        Ok(DataType::Int8 | DataType::Uint8 | DataType::Int32) => {
            tensor.int32_data.iter().map(|&v| v as i64).collect()
        }
        _ => {
            return Err(GraphError(format!(
                "tensor {}: integer expected, got {}",
                tensor.name,
                type_name(tensor.data_type)
            )));
        }
    };
    Ok(values)
}

/// The value of a one-element float tensor.
pub fn scalar(tensor: &TensorProto) -> Result<f32, GraphError> {
    match floats(tensor)?.as_slice() {
        [v] => Ok(*v),
        values => Err(GraphError(format!(
            "tensor {}: one value expected, got {}",
            tensor.name,
            values.len()
        ))),
    }
}

/// `raw_data` as little-endian 4-byte words.
fn le_words(tensor: &TensorProto) -> Result<impl Iterator<Item = [u8; 4]> + '_, GraphError> {
    if !tensor.raw_data.len().is_multiple_of(4) {
        return Err(GraphError(format!(
            "tensor {}: raw data is not a whole number of 4-byte values",
            tensor.name
        )));
    }
    Ok(tensor
        .raw_data
        .chunks_exact(4)
        .map(|b| [b[0], b[1], b[2], b[3]]))
}

fn tensor(name: &str, dims: &[i64], data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

pub fn float_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, DataType::Float, raw)
}

pub fn int8_tensor(name: &str, dims: &[i64], values: &[i8]) -> TensorProto {
    tensor(
        name,
        dims,
        DataType::Int8,
        values.iter().map(|&v| v as u8).collect(),
    )
}

pub fn int32_tensor(name: &str, dims: &[i64], values: &[i32]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, DataType::Int32, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_read_both_encodings() {
        let raw = float_tensor("w", &[2], &[1.5, -2.0]);
        assert_eq!(floats(&raw).unwrap(), [1.5, -2.0]);
        let typed = TensorProto {
            float_data: vec![0.25],
            ..float_tensor("s", &[], &[])
        };
        assert_eq!(scalar(&typed).unwrap(), 0.25);
    }

    #[test]
    fn integers_widen_every_int_type() {
        assert_eq!(
            integers(&int8_tensor("a", &[2], &[-128, 127])).unwrap(),
            [-128, 127]
        );
        assert_eq!(
            integers(&int32_tensor("b", &[2], &[-70000, 3])).unwrap(),
            [-70000, 3]
        );
        let u8s = tensor("c", &[2], DataType::Uint8, vec![0, 255]);
        assert_eq!(integers(&u8s).unwrap(), [0, 255]);
        let typed = TensorProto {
            int32_data: vec![-5],
            ..int8_tensor("d", &[1], &[])
        };
        assert_eq!(integers(&typed).unwrap(), [-5]);
    }

    #[test]
    fn wrong_types_and_sizes_name_the_tensor() {
        let e = floats(&int8_tensor("q", &[1], &[1])).unwrap_err();
        assert_eq!(e.0, "tensor q: float expected, got INT8");
        let e = integers(&float_tensor("f", &[1], &[1.0])).unwrap_err();
        assert_eq!(e.0, "tensor f: integer expected, got FLOAT");
        let e = scalar(&float_tensor("v", &[2], &[1.0, 2.0])).unwrap_err();
        assert_eq!(e.0, "tensor v: one value expected, got 2");
        let torn = tensor("t", &[1], DataType::Float, vec![0; 3]);
        assert!(floats(&torn).unwrap_err().0.contains("tensor t: raw data"));
    }
}
