//! YOLOv5's `[1, N, 5 + classes]` output: score threshold, class-aware NMS, and
//! boxes mapped back through the letterbox into frame pixels.

use serde::Serialize;

use crate::frame::Geometry;

/// Corners `[x1, y1, x2, y2]` in pixels.
pub type Box2 = [f32; 4];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub class: usize,
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: Box2,
}

/// Boxes kept before NMS, as Ultralytics' `max_nms`: bounds the quadratic NMS on
/// frames where a low threshold lets thousands of anchors through.
const MAX_CANDIDATES: usize = 30_000;
/// Detections kept per frame, as Ultralytics' `max_det`.
const MAX_DETECTIONS: usize = 300;

/// Decodes `rows` (N rows of `5 + classes` values, in model-input pixels).
pub fn decode(
    rows: &[f32],
    classes: usize,
    conf: f32,
    iou: f32,
    geometry: &Geometry,
    label: impl Fn(usize) -> String,
) -> Vec<Detection> {
    let mut candidates: Vec<(usize, f32, Box2)> = rows
        .chunks_exact(5 + classes)
        .filter(|row| row[4] > conf)
        .filter_map(|row| {
            let (class, score) = best_class(&row[5..])?;
            let score = score * row[4];
            (score > conf).then(|| (class, score, corners(row)))
        })
        .collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    candidates.truncate(MAX_CANDIDATES);
    nms(candidates, iou)
        .into_iter()
        .take(MAX_DETECTIONS)
        .map(|(class, score, bbox)| Detection {
            class,
            label: label(class),
            score,
            bbox: to_frame(bbox, geometry),
        })
        .collect()
}

fn best_class(scores: &[f32]) -> Option<(usize, f32)> {
    scores
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

fn corners(row: &[f32]) -> Box2 {
    let (cx, cy, w, h) = (row[0], row[1], row[2], row[3]);
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

/// Greedy NMS over score-sorted candidates; boxes of different classes never
/// suppress each other.
fn nms(sorted: Vec<(usize, f32, Box2)>, threshold: f32) -> Vec<(usize, f32, Box2)> {
    let mut kept: Vec<(usize, f32, Box2)> = Vec::new();
    for cand in sorted {
        let suppressed = kept
            .iter()
            .any(|k| k.0 == cand.0 && iou(&k.2, &cand.2) > threshold);
        if !suppressed {
            kept.push(cand);
        }
    }
    kept
}

/// Intersection over union of two corner boxes.
pub fn iou(a: &Box2, b: &Box2) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &Box2| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

fn to_frame(b: Box2, g: &Geometry) -> Box2 {
    let (x1, y1) = g.to_frame(b[0], b[1]);
    let (x2, y2) = g.to_frame(b[2], b[3]);
    let (w, h) = (g.frame_width as f32, g.frame_height as f32);
    [
        x1.clamp(0.0, w),
        y1.clamp(0.0, h),
        x2.clamp(0.0, w),
        y2.clamp(0.0, h),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: Geometry = Geometry {
        scale_x: 1.0,
        scale_y: 1.0,
        offset_x: 0.0,
        offset_y: 0.0,
        frame_width: 100,
        frame_height: 100,
    };

    fn row(cx: f32, cy: f32, obj: f32, class: usize, score: f32) -> Vec<f32> {
        let mut r = vec![cx, cy, 10.0, 10.0, obj, 0.0, 0.0];
        r[5 + class] = score;
        r
    }

    #[test]
    fn score_is_objectness_times_class_and_nms_is_per_class() {
        let rows = [
            row(50.0, 50.0, 0.9, 0, 0.9), // kept
            row(51.0, 50.0, 0.9, 0, 0.8), // same class, overlaps: suppressed
            row(51.0, 50.0, 0.9, 1, 0.7), // other class, overlaps: kept
            row(10.0, 10.0, 0.9, 0, 0.2), // 0.18 < 0.25: dropped
        ]
        .concat();
        let dets = decode(&rows, 2, 0.25, 0.45, &IDENTITY, |c| c.to_string());
        assert_eq!(dets.len(), 2);
        assert_eq!((dets[0].class, dets[1].class), (0, 1));
        assert!((dets[0].score - 0.81).abs() < 1e-6);
        assert_eq!(dets[0].bbox, [45.0, 45.0, 55.0, 55.0]);
    }

    #[test]
    fn boxes_map_back_through_the_letterbox_and_clip() {
        let g = Geometry {
            scale_x: 0.5,
            scale_y: 0.5,
            offset_x: 0.0,
            offset_y: 10.0,
            frame_width: 200,
            frame_height: 100,
        };
        let rows = row(5.0, 15.0, 1.0, 0, 1.0);
        let dets = decode(&rows, 2, 0.25, 0.45, &g, |c| c.to_string());
        assert_eq!(dets[0].bbox, [0.0, 0.0, 20.0, 20.0]);
    }

    #[test]
    fn iou_of_disjoint_and_identical_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, 2.0]), 1.0);
        assert!((iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]) - 1.0 / 3.0).abs() < 1e-6);
    }
}
