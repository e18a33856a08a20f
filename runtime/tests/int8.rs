//! The int8 execution path against the same QDQ file run in float by tract.

mod common;

use common::{read_f32, root};
use edgebone::decode::f32_values;
use edgebone::{Bundle, ModelOptions, Pipeline, Task};
use tract_onnx::prelude::{IntoTValue, Tensor};

fn pipeline(model: &str, integer: bool) -> Pipeline {
    let bundle = Bundle::open(root().join("models").join(model)).unwrap();
    let options = ModelOptions {
        integer,
        ..Default::default()
    };
    let task = Task::head(&bundle.manifest);
    Pipeline::load(bundle, task, &options).unwrap()
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
        // The two differ where a value lands within float rounding of a
        // quantization step, and that compounds. The integer side is the same on
        // every target (the digest tests); the float QDQ side is not: its sums are
        // ordered differently per kernel family. Measured on the shipped bundle:
        // 0.9932 to 0.9943 on x86, 0.9905 to 0.9940 on aarch64 (A72), 0.9897 to
        // 0.9943 on armv7.
        let cos = cosine(&a, &b);
        eprintln!(
            "input{i}: logits cosine {cos:.5}, top-1 {} / {}",
            argmax(&a),
            argmax(&b)
        );
        assert!(cos >= 0.98, "input{i}: cosine {cos}");
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
    // 51 of the 52 convolutions: `quantize int8 --method auto` kept the stem
    // convolution and the classifier float (quantization.json), so neither is a
    // quantized pattern.
    assert_eq!(s.integer.len(), 51 + 10, "{:?}", s.float);
    let float: Vec<&str> = s.float.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(float, ["/GlobalAveragePool"]);
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

/// The output of every integer operator of `network` on a golden input: name,
/// type, shape and sha256 of its bytes, one line each.
fn integer_digests(network: &str, input: &str, threads: usize) -> Vec<String> {
    use edgebone::model::int8::{self, ops};
    use sha2::{Digest, Sha256};
    use tract_linalg::multithread::Executor;
    use tract_onnx::prelude::*;

    let mut onnx = tract_onnx::onnx();
    int8::register(&mut onnx, true);
    let mut proto = onnx.proto_model_for_path(root().join(network)).unwrap();
    int8::rewrite(&mut proto, &[]);
    let graph = proto.graph.as_ref().unwrap();
    let names: Vec<&str> = graph
        .node
        .iter()
        .filter(|n| [ops::CONV, ops::ADD, ops::LOOKUP].contains(&n.op_type.as_str()))
        .map(|n| n.output[0].as_str())
        .collect();
    let input = read_f32(&root().join("tests/data/golden").join(input));
    let side = ((input.len() / 3) as f64).sqrt() as usize;
    let plan = onnx
        .model_for_proto_model(&proto)
        .unwrap()
        .with_input_fact(0, f32::fact([1, 3, side, side]).into())
        .unwrap()
        .with_outputs_by_name(&names)
        .unwrap()
        .into_optimized()
        .unwrap();
    let executor = match threads {
        1 => Executor::SingleThread,
        n => Executor::multithread(n),
    };
    let options = RunOptions {
        executor: Some(executor),
        ..Default::default()
    };
    let plan = plan.into_runnable_with_options(&options).unwrap();
    let input = Tensor::from_shape(&[1, 3, side, side], &input).unwrap();
    let outputs = plan.run(tvec![input.into_tvalue()]).unwrap();
    names
        .iter()
        .zip(outputs)
        .map(|(name, t)| {
            let bytes = t.as_bytes();
            let hash: String = Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("{name} {:?} {:?} {hash}", t.datum_type(), t.shape())
        })
        .collect()
}

/// The integer path's arithmetic (integer sums, one f32 multiply per value, fixed
/// rounding, no fused multiply-add) is meant to give the same bytes on every
/// target. The digests were written on x86 (`EDGEBONE_BLESS=1 cargo test -p
/// edgebone --test int8 digests`); .ci/arm runs this test on aarch64 and armv7.
/// Work split across threads must not change a byte either.
fn assert_same_bytes_as_committed(model: &str, network: &str, input: &str, threads: usize) {
    let path = root().join(format!("tests/data/int8-digests/{model}.txt"));
    let ours = integer_digests(network, input, threads);
    if std::env::var_os("EDGEBONE_BLESS").is_some() && threads == 1 {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, ours.join("\n") + "\n").unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    let committed: Vec<&str> = committed.lines().collect();
    assert_eq!(ours.len(), committed.len(), "{model}: integer operators");
    for (a, b) in ours.iter().zip(&committed) {
        // The first operator that differs is where to look; the rest follow it.
        assert_eq!(a, b, "{model}: first integer output that differs from x86");
    }
    eprintln!(
        "{model}, {threads} thread(s): {} integer outputs byte-identical to the committed x86 run",
        ours.len()
    );
}

#[test]
fn mobilenet_v2_int8_digests_match_x86() {
    assert_same_bytes_as_committed(
        "mobilenet_v2_int8",
        "models/mobilenet_v2_int8/mobilenet_v2_int8.onnx",
        "mobilenet_v2.input0.f32",
        1,
    );
}

#[test]
fn mobilenet_v2_int8_digests_match_x86_on_two_threads() {
    assert_same_bytes_as_committed(
        "mobilenet_v2_int8",
        "models/mobilenet_v2_int8/mobilenet_v2_int8.onnx",
        "mobilenet_v2.input0.f32",
        2,
    );
}

#[test]
fn yolov5n_int8_digests_match_x86() {
    assert_same_bytes_as_committed(
        "yolov5n_int8",
        "models/yolov5n_int8/yolov5n_int8.onnx",
        "yolov5n.bus.input.f32",
        1,
    );
}
