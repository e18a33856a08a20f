//! The int8 execution path against the same QDQ file run in float by tract.

mod common;

use common::{read_f32, root};
use edgebone::decode::f32_values;
use edgebone::{Bundle, ModelOptions, Pipeline};
use tract_onnx::prelude::{IntoTValue, Tensor};

fn pipeline(model: &str, integer: bool) -> Pipeline {
    let bundle = Bundle::open(root().join("models").join(model)).unwrap();
    let options = ModelOptions {
        integer,
        ..Default::default()
    };
    Pipeline::load(bundle, &options).unwrap()
}

fn run(pipeline: &mut Pipeline, input: &[f32]) -> Vec<f32> {
    let input = Tensor::from_shape(&pipeline.input_shape(), input).unwrap();
    let outputs = pipeline.infer(input.into_tvalue()).unwrap();
    f32_values(&outputs[0]).unwrap().to_vec()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap()
}

#[test]
fn mobilenet_v2_int8_integer_path_follows_the_float_qdq_run() {
    let mut integer = pipeline("mobilenet_v2_int8", true);
    let mut float = pipeline("mobilenet_v2_int8", false);
    for i in 0..4 {
        let input = read_f32(&root().join(format!("tests/data/golden/mobilenet_v2.input{i}.f32")));
        let a = run(&mut integer, &input);
        let b = run(&mut float, &input);
        // Measured: cosine 0.9958 to 0.9974. The two differ where a value lands
        // within float rounding of a quantization step, and that compounds.
        let cos = cosine(&a, &b);
        eprintln!(
            "input{i}: logits cosine {cos:.5}, top-1 {} / {}",
            argmax(&a),
            argmax(&b)
        );
        assert!(cos >= 0.99, "input{i}: cosine {cos}");
        assert_eq!(argmax(&a), argmax(&b), "input{i}");
    }
}

fn summary(network: &str) -> edgebone::model::int8::Summary {
    use tract_onnx::prelude::Framework;
    let mut proto = tract_onnx::onnx()
        .proto_model_for_path(root().join(network))
        .unwrap();
    edgebone::model::int8::rewrite(&mut proto, &[])
}

#[test]
fn every_mobilenet_v2_convolution_and_residual_runs_as_int8() {
    let s = summary("models/mobilenet_v2_int8/mobilenet_v2_int8.onnx");
    assert_eq!(s.integer.len(), 52 + 10, "{:?}", s.float);
    let float: Vec<&str> = s.float.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        float,
        ["/GlobalAveragePool", "/classifier/classifier.1/Gemm"]
    );
}

#[test]
fn uint8_models_from_onnx_runtime_run_in_float_and_say_why() {
    let s = summary("tests/data/ort-qdq/mobilenet_v2_ort_u8/mobilenet_v2_ort_u8.onnx");
    assert!(s.integer.is_empty(), "{:?}", s.integer);
    let (node, reason) = s.float.iter().find(|(n, _)| n.contains("Conv")).unwrap();
    assert!(reason.contains("UINT8 activations"), "{node}: {reason}");
}

#[test]
fn float_models_are_left_alone() {
    let s = summary("models/mobilenet_v2/mobilenet_v2.onnx");
    assert!(!s.is_quantized());
}

#[test]
fn every_yolov5n_convolution_runs_as_int8_and_the_head_gives_float() {
    let s = summary("models/yolov5n_int8/yolov5n_int8.onnx");
    // 60 convolutions (the 3 of the detect head write float), 57 SiLU tables,
    // residual additions, concatenations and SPPF's max pools.
    assert_eq!(s.integer.len(), 140, "{:?}", s.float);
    let float: Vec<&str> = s.float.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        float,
        [
            "/model.11/Shape",
            "/model.11/Resize",
            "/model.15/Shape",
            "/model.15/Resize"
        ]
    );
}
