//! Where a frame becomes a tensor: resize, fit (crop, letterbox or stretch),
//! normalize, NCHW f32, keeping the geometry that maps results back to the frame.

use std::sync::Arc;

use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use tract_onnx::prelude::{IntoTValue, TValue, Tensor};

use crate::error::{Error, Result};
use crate::frame::RgbFrame;
use crate::model::manifest::{ChannelOrder, Fit, InputSpec, Interpolation};

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

/// How far `center-crop` may enlarge a frame before it refuses it.
const MAX_UPSCALE: u32 = 4;

/// Turns frames into input tensors for one model input size, reusing its buffers.
pub struct Preprocessor {
    spec: InputSpec,
    width: u32,
    height: u32,
    resize_shorter: u32,
    resizer: Resizer,
    resized: Image<'static>,
    /// u8 → normalized f32 for each tensor channel: three table lookups per pixel
    /// instead of a multiply-add and a divide.
    lut: [[f32; 256]; 3],
    tensor: Arc<Tensor>,
}

impl Preprocessor {
    /// `width`×`height` may differ from the manifest's size (feature maps at other
    /// resolutions); the centre-crop resize then scales with it.
    pub fn new(spec: &InputSpec, width: u32, height: u32) -> Preprocessor {
        let crop = spec.width.min(spec.height) as f32;
        let resize_shorter = spec
            .resize_shorter
            .map(|s| (s as f32 * width.min(height) as f32 / crop).round() as u32)
            .unwrap_or(width.min(height));
        Preprocessor {
            spec: spec.clone(),
            width,
            height,
            resize_shorter,
            resizer: Resizer::new(),
            resized: Image::new(width, height, PixelType::U8x3),
            lut: normalization_table(spec),
            tensor: Arc::new(
                Tensor::zero::<f32>(&[1, 3, height as usize, width as usize]).unwrap(),
            ),
        }
    }

    /// Fits and normalizes `frame` into the model's input tensor.
    pub fn run(&mut self, frame: &RgbFrame) -> Result<(TValue, Geometry)> {
        let geometry = match self.spec.fit {
            Fit::CenterCrop => self.center_crop(frame)?,
            Fit::Letterbox => self.letterbox(frame)?,
            Fit::Stretch => self.stretch(frame)?,
        };
        self.normalize();
        Ok((self.tensor.clone().into_tvalue(), geometry))
    }

    fn options(&self) -> ResizeOptions {
        let filter = match self.spec.interpolation {
            Interpolation::BilinearAntialias => ResizeAlg::Convolution(FilterType::Bilinear),
            Interpolation::Bilinear => ResizeAlg::Interpolation(FilterType::Bilinear),
        };
        ResizeOptions::new().resize_alg(filter)
    }

    /// torchvision's `Resize(shorter)` then `CenterCrop(h, w)`, done as one resize of
    /// the source region that survives the crop.
    fn center_crop(&mut self, frame: &RgbFrame) -> Result<Geometry> {
        let (w, h) = (self.width, self.height);
        // Small photos are upscaled as torchvision does (ImageNet holds 160x170
        // ones), but past 4x every detail the model sees would be invented.
        let min_side = w.min(h).div_ceil(MAX_UPSCALE);
        if frame.width.min(frame.height) < min_side {
            return Err(Error::Frame {
                what: format!("{}x{} image", frame.width, frame.height),
                message: format!(
                    "too small for the model's {w}x{h} crop: the shorter side must be at least {min_side} px"
                ),
            });
        }
        let (fw, fh) = (frame.width as f64, frame.height as f64);
        let s = self.resize_shorter as f64;
        // torchvision truncates the longer side.
        let (rw, rh) = if fw <= fh {
            (s, (s * fh / fw).floor())
        } else {
            ((s * fw / fh).floor(), s)
        };
        // torchvision rounds half to even, as Python's round().
        let left = ((rw - w as f64) / 2.0).round_ties_even();
        let top = ((rh - h as f64) / 2.0).round_ties_even();
        let (sx, sy) = (rw / fw, rh / fh);
        let options = self
            .options()
            .crop(left / sx, top / sy, w as f64 / sx, h as f64 / sy);
        self.resize(frame, None, &options)?;
        Ok(Geometry {
            scale_x: sx as f32,
            scale_y: sy as f32,
            offset_x: -left as f32,
            offset_y: -top as f32,
            frame_width: frame.width,
            frame_height: frame.height,
        })
    }

    /// YOLOv5's letterbox: keep the aspect ratio, centre, pad with grey.
    fn letterbox(&mut self, frame: &RgbFrame) -> Result<Geometry> {
        let (w, h) = (self.width as f64, self.height as f64);
        let (fw, fh) = (frame.width as f64, frame.height as f64);
        let gain = (w / fw).min(h / fh);
        let nw = ((fw * gain).round_ties_even() as u32).clamp(1, self.width);
        let nh = ((fh * gain).round_ties_even() as u32).clamp(1, self.height);
        // Ultralytics splits odd padding this way: round(d - 0.1) on the left/top.
        let left = ((w - nw as f64) / 2.0 - 0.1).round_ties_even().max(0.0) as u32;
        let top = ((h - nh as f64) / 2.0 - 0.1).round_ties_even().max(0.0) as u32;
        let pad = self.spec.pad_value;
        self.resized.buffer_mut().fill(pad);
        let options = self.options();
        self.resize(frame, Some((left, top, nw, nh)), &options)?;
        Ok(Geometry {
            scale_x: gain as f32,
            scale_y: gain as f32,
            offset_x: left as f32,
            offset_y: top as f32,
            frame_width: frame.width,
            frame_height: frame.height,
        })
    }

    fn stretch(&mut self, frame: &RgbFrame) -> Result<Geometry> {
        let options = self.options();
        self.resize(frame, None, &options)?;
        Ok(Geometry {
            scale_x: self.width as f32 / frame.width as f32,
            scale_y: self.height as f32 / frame.height as f32,
            offset_x: 0.0,
            offset_y: 0.0,
            frame_width: frame.width,
            frame_height: frame.height,
        })
    }

    /// Resizes the frame into `self.resized`, or into a sub-rectangle of it.
    fn resize(
        &mut self,
        frame: &RgbFrame,
        region: Option<(u32, u32, u32, u32)>,
        options: &ResizeOptions,
    ) -> Result<()> {
        let fail = |e: &dyn std::fmt::Display| Error::Frame {
            what: format!("{}x{} frame", frame.width, frame.height),
            message: format!("resize failed: {e}"),
        };
        let src = ImageRef::new(frame.width, frame.height, &frame.data, PixelType::U8x3)
            .map_err(|e| fail(&e))?;
        match region {
            None => self.resizer.resize(&src, &mut self.resized, options),
            Some((left, top, width, height)) => {
                let mut dst = CroppedImageMut::new(&mut self.resized, left, top, width, height)
                    .map_err(|e| fail(&e))?;
                self.resizer.resize(&src, &mut dst, options)
            }
        }
        .map_err(|e| fail(&e))
    }

    /// Packed RGB8 → planar normalized f32, into the tensor of the previous frame
    /// when the model has let go of it.
    ///
    /// Written by hand: this interleaved-to-planar lookup is one pass over the
    /// pixels, and no image crate writes into a caller's f32 NCHW buffer.
    fn normalize(&mut self) {
        if Arc::get_mut(&mut self.tensor).is_none() {
            log::debug!("input tensor still in use, allocating a new one");
            self.tensor = Arc::new(self.tensor.deep_clone());
        }
        let tensor = Arc::get_mut(&mut self.tensor).expect("tensor was just made exclusive");
        let mut view = tensor
            .try_as_plain_ram_mut()
            .expect("the input tensor is created in ram");
        let out = view
            .as_slice_mut::<f32>()
            .expect("the input tensor is created as f32");
        let plane = (self.width * self.height) as usize;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        let src_channel = match self.spec.channels {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        };
        let lut = &self.lut;
        for (i, px) in self.resized.buffer().chunks_exact(3).enumerate() {
            r[i] = lut[0][px[src_channel[0]] as usize];
            g[i] = lut[1][px[src_channel[1]] as usize];
            b[i] = lut[2][px[src_channel[2]] as usize];
        }
    }
}

fn normalization_table(spec: &InputSpec) -> [[f32; 256]; 3] {
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, slot) in table.iter_mut().enumerate() {
            *slot = (v as f32 * spec.scale - spec.mean[c]) / spec.std[c];
        }
    }
    lut
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Manifest;

    fn spec(fit: &str, extra: &str) -> InputSpec {
        let text = format!(
            "name='t'\nnetwork='n'\nsha256='0'\n[input]\nwidth=4\nheight=4\nscale=1.0\nfit='{fit}'\n{extra}\n[output]\ndecoding='classifier'\n"
        );
        Manifest::parse(&text).unwrap().input
    }

    fn uniform(width: u32, height: u32, rgb: [u8; 3]) -> RgbFrame {
        RgbFrame::new(width, height, rgb.repeat((width * height) as usize)).unwrap()
    }

    #[test]
    fn normalizes_into_planar_channels() {
        let mut spec = spec("stretch", "mean=[1.0,2.0,3.0]\nstd=[2.0,2.0,2.0]");
        spec.channels = ChannelOrder::Rgb;
        let mut pre = Preprocessor::new(&spec, 4, 4);
        let (tensor, _) = pre.run(&uniform(8, 8, [11, 22, 33])).unwrap();
        let v = crate::decode::f32_values(&tensor).unwrap();
        assert_eq!((v[0], v[16], v[32]), (5.0, 10.0, 15.0));
    }

    #[test]
    fn letterbox_pads_and_maps_back() {
        let mut pre = Preprocessor::new(&spec("letterbox", "pad_value=114"), 4, 4);
        let (tensor, geo) = pre.run(&uniform(8, 4, [200, 200, 200])).unwrap();
        let v = crate::decode::f32_values(&tensor).unwrap();
        // 8x4 → 4x2 band centred vertically: rows 0 and 3 are padding.
        assert_eq!(v[0], 114.0);
        assert_eq!(v[4], 200.0);
        assert_eq!(v[12], 114.0);
        assert_eq!(geo.to_frame(4.0, 3.0), (8.0, 4.0));
    }

    #[test]
    fn center_crop_follows_torchvision_geometry() {
        // 4x4 crop of a 16x8 frame resized to shorter side 6: 12x6, crop left 4, top 1.
        let mut pre = Preprocessor::new(&spec("center-crop", "resize_shorter=6"), 4, 4);
        let (_, geo) = pre.run(&uniform(16, 8, [0, 0, 0])).unwrap();
        assert_eq!((geo.offset_x, geo.offset_y), (-4.0, -1.0));
        assert_eq!(geo.to_frame(0.0, 0.0), (16.0 * 4.0 / 12.0, 8.0 / 6.0));
    }

    #[test]
    fn a_frame_smaller_than_the_crop_is_refused() {
        let mut pre = Preprocessor::new(&spec("center-crop", "resize_shorter=8"), 8, 8);
        let err = pre.run(&uniform(1, 9, [0, 0, 0])).unwrap_err().to_string();
        assert!(
            err.contains("1x9") && err.contains("8x8 crop") && err.contains("2 px"),
            "{err}"
        );
        assert!(pre.run(&uniform(2, 9, [0, 0, 0])).is_ok());
    }

    #[test]
    fn reuses_the_tensor_once_released() {
        let mut pre = Preprocessor::new(&spec("stretch", ""), 4, 4);
        let (first, _) = pre.run(&uniform(4, 4, [1, 1, 1])).unwrap();
        let ptr = crate::decode::f32_values(&first).unwrap().as_ptr();
        drop(first);
        let (second, _) = pre.run(&uniform(4, 4, [2, 2, 2])).unwrap();
        assert_eq!(crate::decode::f32_values(&second).unwrap().as_ptr(), ptr);
    }
}
