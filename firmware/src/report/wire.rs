//! The two serial wire formats (docs/serial.md).
//!
//! - NDJSON: `seq`, then the stdout line's `frame`, `captured_unix_ms`,
//!   `latency_ms`, `stages_ms` and `top`, `detections` or `embedding` (no `image`,
//!   no feature summaries), then a `crc` last: CRC-32 (zlib's) of the line's bytes
//!   before `,"crc":`, as 8 hex digits.
//! - Binary, for microcontrollers: a postcard-encoded [`WireReport`], then the
//!   CRC-32 of those bytes (little-endian u32), COBS-encoded, then one 0x00 byte.
//!
//! `seq` counts every report handed to the serial writer, so a receiver sees a
//! gap when reports were lost (a device that was away too long, a corrupt frame).

use crc::{CRC_32_ISO_HDLC, Crc};
use edgebone::decode::{Class, Detection};
use edgebone::{Latency, Results};
use serde::{Deserialize, Serialize};

use super::Report;

/// CRC-32/ISO-HDLC: the CRC of zlib, Python's `zlib.crc32`, Ethernet.
pub const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireReport {
    pub seq: u32,
    pub frame: u64,
    pub captured_unix_ms: u64,
    pub latency_us: u32,
    pub results: WireResults,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireResults {
    /// (class index, score), best first.
    Top(Vec<(u16, f32)>),
    /// (class index, score, [x1, y1, x2, y2] in frame pixels).
    Detections(Vec<(u16, f32, [f32; 4])>),
    Embedding(Vec<f32>),
}

/// The fields of an NDJSON line, spelled out so that the stdout report can grow
/// without changing what a receiver parses.
#[derive(Serialize)]
struct Line<'a> {
    seq: u32,
    frame: u64,
    captured_unix_ms: f64,
    latency_ms: f64,
    stages_ms: &'a Latency,
    #[serde(flatten)]
    results: LineResults<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum LineResults<'a> {
    Top(&'a [Class]),
    Detections(&'a [Detection]),
    Embedding(&'a [f32]),
}

pub fn ndjson(seq: u32, report: &Report) -> Vec<u8> {
    let results = match &report.results {
        Results::Top(top) => LineResults::Top(top),
        Results::Detections(dets) => LineResults::Detections(dets),
        Results::Features { embedding, .. } => LineResults::Embedding(embedding),
    };
    let fields = Line {
        seq,
        frame: report.frame,
        captured_unix_ms: report.captured_unix_ms,
        latency_ms: report.latency_ms,
        stages_ms: &report.stages_ms,
        results,
    };
    let mut line = serde_json::to_vec(&fields).expect("reports serialize");
    line.pop(); // the closing brace
    let crc = CRC32.checksum(&line);
    line.extend_from_slice(format!(",\"crc\":\"{crc:08x}\"}}\n").as_bytes());
    line
}

pub fn binary(seq: u32, report: &Report) -> Vec<u8> {
    let results = match &report.results {
        Results::Top(top) => {
            WireResults::Top(top.iter().map(|c| (c.class as u16, c.score)).collect())
        }
        Results::Detections(dets) => WireResults::Detections(
            dets.iter()
                .map(|d| (d.class as u16, d.score, d.bbox))
                .collect(),
        ),
        Results::Features { embedding, .. } => WireResults::Embedding(embedding.clone()),
    };
    let wire = WireReport {
        seq,
        frame: report.frame,
        captured_unix_ms: report.captured_unix_ms as u64,
        latency_us: (report.latency_ms * 1e3).min(u32::MAX as f64) as u32,
        results,
    };
    let mut payload = postcard::to_allocvec(&wire).expect("reports serialize");
    payload.extend_from_slice(&CRC32.checksum(&payload).to_le_bytes());
    let mut frame = cobs::encode_vec(&payload);
    frame.push(0);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgebone::decode::FeatureMap;
    use tract_onnx::prelude::{IntoTValue, Tensor};

    fn report() -> Report {
        Report {
            image: None,
            frame: 7,
            captured_unix_ms: 1.5e12,
            latency_ms: 21.25,
            stages_ms: Latency::default(),
            results: Results::Top(vec![Class {
                class: 15,
                label: "robin".into(),
                score: 0.75,
            }]),
        }
    }

    #[test]
    fn a_binary_frame_decodes_and_its_crc_catches_a_flipped_bit() {
        let frame = binary(3, &report());
        assert_eq!(frame.last(), Some(&0));
        assert!(!frame[..frame.len() - 1].contains(&0));
        let payload = cobs::decode_vec(&frame[..frame.len() - 1]).unwrap();
        let (body, crc) = payload.split_at(payload.len() - 4);
        assert_eq!(CRC32.checksum(body).to_le_bytes(), crc);
        let wire: WireReport = postcard::from_bytes(body).unwrap();
        assert_eq!((wire.seq, wire.frame, wire.latency_us), (3, 7, 21_250));
        assert_eq!(wire.results, WireResults::Top(vec![(15, 0.75)]));
        let mut bad = body.to_vec();
        bad[2] ^= 0x10;
        assert_ne!(CRC32.checksum(&bad).to_le_bytes(), crc);
    }

    #[test]
    fn an_ndjson_line_carries_seq_and_a_checkable_crc() {
        let line = ndjson(9, &report());
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.starts_with("{\"seq\":9,\"frame\":7,") && text.ends_with("\"}\n"));
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["top"][0]["label"], "robin");
        let cut = text.rfind(",\"crc\":").unwrap();
        let crc = format!("{:08x}", CRC32.checksum(&line[..cut]));
        assert_eq!(value["crc"], crc.as_str());
    }

    /// The lines as they were before reports gained `image` and feature
    /// summaries: a receiver must see the same bytes.
    #[test]
    fn ndjson_lines_keep_their_bytes() {
        let head = r#"{"seq":1,"frame":7,"captured_unix_ms":1500000000000.0,"latency_ms":21.25,"stages_ms":{"preprocess":0.0,"infer":0.0,"postprocess":0.0},"#;
        let mut top = report();
        top.image = Some("photo.jpg".into());
        let mut detections = report();
        detections.results = Results::Detections(vec![Detection {
            class: 5,
            label: "bus".into(),
            score: 0.5,
            bbox: [1.0, 2.0, 3.0, 4.5],
        }]);
        let map = Tensor::from_shape(&[1, 2, 1, 1], &[1f32, 3.0]).unwrap();
        let mut features = report();
        features.results = Results::Features {
            maps: vec![FeatureMap::new("layer4", 32, map.into_tvalue()).unwrap()],
            embedding: vec![1.0, 3.0],
        };
        for (report, results) in [
            (top, r#""top":[{"class":15,"label":"robin","score":0.75}]"#),
            (
                detections,
                r#""detections":[{"class":5,"label":"bus","score":0.5,"box":[1.0,2.0,3.0,4.5]}]"#,
            ),
            (features, r#""embedding":[1.0,3.0]"#),
        ] {
            let line = String::from_utf8(ndjson(1, &report)).unwrap();
            let cut = line.rfind(",\"crc\":").unwrap();
            assert_eq!(&line[..cut], format!("{head}{results}"));
        }
    }
}
