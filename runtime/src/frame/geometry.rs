//! How a frame was placed in the model's input (scaled, cropped or letterboxed),
//! so that results in model-input pixels map back to frame pixels.

/// How tensor pixels relate to frame pixels: `tensor = frame * scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub scale_x: f32,
    pub scale_y: f32,
    pub offset_x: f32,
    pub offset_y: f32,
    pub frame_width: u32,
    pub frame_height: u32,
}

impl Geometry {
    /// Maps a point of the model input back into frame pixels.
    pub fn to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.offset_x) / self.scale_x,
            (y - self.offset_y) / self.scale_y,
        )
    }
}
