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

/// Why a receiver refuses a line or frame: one line naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn refused<T>(message: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(message.into()))
}

/// The receiver's side of [`ndjson`]: one line (its `\n` optional) whose `crc`
/// field, last, matches the bytes before it, and whose `seq` is a u32. Gives
/// `seq` and the whole object; a receiver reads what it needs from it.
pub fn decode_ndjson(line: &[u8]) -> Result<(u32, serde_json::Value), WireError> {
    const CRC_KEY: &[u8] = b",\"crc\":\"";
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let Some(cut) = line.windows(CRC_KEY.len()).rposition(|w| w == CRC_KEY) else {
        return refused("no \"crc\" field");
    };
    // `,"crc":"` then 8 hex digits, `"` and the closing brace.
    let tail = &line[cut + CRC_KEY.len()..];
    let Some(hex) = tail.strip_suffix(b"\"}") else {
        return refused("\"crc\" is not the last field");
    };
    let sent = std::str::from_utf8(hex)
        .ok()
        .filter(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    let Some(sent) = sent else {
        return refused("\"crc\" is not 8 hex digits");
    };
    let actual = CRC32.checksum(&line[..cut]);
    if actual != sent {
        return refused(format!(
            "CRC mismatch: line says {sent:08x}, bytes give {actual:08x}"
        ));
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| WireError(format!("not JSON: {e}")))?;
    let seq = value
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .and_then(|s| u32::try_from(s).ok());
    match seq {
        Some(seq) => Ok((seq, value)),
        None => refused("no \"seq\" of 0 to 2^32 - 1"),
    }
}

/// The receiver's side of [`binary`]: one COBS frame (its 0x00 delimiter
/// optional), then the CRC-32 of the postcard bytes, then the report.
pub fn decode_binary(frame: &[u8]) -> Result<WireReport, WireError> {
    let frame = frame.strip_suffix(&[0]).unwrap_or(frame);
    let payload = cobs::decode_vec(frame).map_err(|e| WireError(format!("COBS: {e}")))?;
    let Some(split) = payload.len().checked_sub(4) else {
        return refused(format!("{} bytes, shorter than a CRC", payload.len()));
    };
    let (body, crc) = payload.split_at(split);
    let sent = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = CRC32.checksum(body);
    if actual != sent {
        return refused(format!(
            "CRC mismatch: frame says {sent:08x}, bytes give {actual:08x}"
        ));
    }
    postcard::from_bytes(body).map_err(|e| WireError(format!("postcard: {e}")))
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
        let wire = decode_binary(&frame).unwrap();
        assert_eq!((wire.seq, wire.frame, wire.latency_us), (3, 7, 21_250));
        assert_eq!(wire.results, WireResults::Top(vec![(15, 0.75)]));
        let mut payload = cobs::decode_vec(&frame[..frame.len() - 1]).unwrap();
        payload[2] ^= 0x10;
        let err = decode_binary(&cobs::encode_vec(&payload)).unwrap_err();
        assert!(err.0.starts_with("CRC mismatch"), "{err}");
    }

    #[test]
    fn broken_binary_frames_are_refused_by_name() {
        let refusal = |frame: &[u8]| decode_binary(frame).unwrap_err().0;
        assert!(refusal(&[]).starts_with("COBS"));
        assert!(refusal(&[3, 1, 0, 0]).starts_with("COBS"));
        assert!(refusal(&[3, 1, 2]).contains("shorter than a CRC"));
        // A CRC that matches bytes postcard cannot read.
        let mut payload = vec![0xff; 3];
        payload.extend_from_slice(&CRC32.checksum(&payload).to_le_bytes());
        assert!(refusal(&cobs::encode_vec(&payload)).starts_with("postcard"));
    }

    #[test]
    fn an_ndjson_line_carries_seq_and_a_checkable_crc() {
        let line = ndjson(9, &report());
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.starts_with("{\"seq\":9,\"frame\":7,") && text.ends_with("\"}\n"));
        let (seq, value) = decode_ndjson(&line).unwrap();
        assert_eq!((seq, &value["top"][0]["label"]), (9, &"robin".into()));
        let cut = text.rfind(",\"crc\":").unwrap();
        let crc = format!("{:08x}", CRC32.checksum(&line[..cut]));
        assert_eq!(value["crc"], crc.as_str());
    }

    #[test]
    fn broken_ndjson_lines_are_refused_by_name() {
        let line = String::from_utf8(ndjson(9, &report())).unwrap();
        let refusal = |line: &str| decode_ndjson(line.as_bytes()).unwrap_err().0;
        assert!(refusal(&line.replace("robin", "robiN")).starts_with("CRC mismatch"));
        assert!(refusal("{\"seq\":1}").contains("no \"crc\""));
        assert!(refusal(&line.replace("\"}\n", "\" }")).contains("not the last"));
        assert!(refusal(",\"crc\":\"xyz\"}").contains("8 hex digits"));
        // Bytes that match their CRC but are not one JSON object with a seq.
        for (body, says) in [("{", "not JSON"), ("{\"seq\":-1", "no \"seq\"")] {
            let crc = CRC32.checksum(body.as_bytes());
            assert!(refusal(&format!("{body},\"crc\":\"{crc:08x}\"}}")).contains(says));
        }
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
