//! Where a frame becomes a tensor: fit (crop, letterbox or stretch) and resize,
//! normalize into NCHW f32, and the [`Geometry`] that maps results back to the
//! frame. YUV frames are resized plane by plane to the model's size and only then
//! converted to RGB (`frame::yuv`), so ARM and x86 get the same pixels.

use std::sync::Arc;

use fast_image_resize::images::{CroppedImageMut, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use tract_onnx::prelude::{IntoTValue, TValue, Tensor};

use crate::error::{Error, Result};
use crate::frame::yuv::{
    Chroma, Coefficients, Colour, Normalization, YuvPlanes, yuv444_to_tensor_row,
};
use crate::frame::{FrameRef, Geometry, Pixels};
use crate::model::manifest::{ChannelOrder, Fit, InputSpec, Interpolation};

/// How far `center-crop` may enlarge a frame before it refuses it.
const MAX_UPSCALE: u32 = 4;

/// Where a frame goes in the resized image: the source rectangle to read
/// (`None`: all of it) and the destination rectangle (`None`: all of it).
struct Placement {
    geometry: Geometry,
    crop: Option<(f64, f64, f64, f64)>,
    region: Option<(u32, u32, u32, u32)>,
}

/// Scratch images of the YUV path, reused while the model size stays.
struct YuvScratch {
    y: Image<'static>,
    u: Image<'static>,
    v: Image<'static>,
    uv: Image<'static>,
}

impl YuvScratch {
    fn new(width: u32, height: u32) -> YuvScratch {
        YuvScratch {
            y: Image::new(width, height, PixelType::U8),
            u: Image::new(width, height, PixelType::U8),
            v: Image::new(width, height, PixelType::U8),
            uv: Image::new(width, height, PixelType::U8x2),
        }
    }
}

/// Turns frames into input tensors for one model input size, reusing its buffers.
pub struct Preprocessor {
    spec: InputSpec,
    width: u32,
    height: u32,
    resize_shorter: u32,
    resizer: Resizer,
    resized: Image<'static>,
    yuv: Option<YuvScratch>,
    /// Planes of padded frames with the padding taken out: resizing reads
    /// pixels next to its source rectangle, so padding must not be there.
    tight: [Vec<u8>; 3],
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
            yuv: None,
            tight: Default::default(),
            lut: normalization_table(spec),
            tensor: Arc::new(
                Tensor::zero::<f32>(&[1, 3, height as usize, width as usize]).unwrap(),
            ),
        }
    }

    /// Fits and normalizes `frame` into the model's input tensor.
    pub fn run<'f>(&mut self, frame: impl Into<FrameRef<'f>>) -> Result<(TValue, Geometry)> {
        let mut tight = std::mem::take(&mut self.tight);
        let result = frame
            .into()
            .pixels(&mut tight)
            .and_then(|pixels| self.fit(&pixels));
        self.tight = tight;
        result
    }

    fn fit(&mut self, pixels: &Pixels) -> Result<(TValue, Geometry)> {
        let (width, height) = pixels.size();
        let placement = match self.spec.fit {
            Fit::CenterCrop => self.center_crop(width, height)?,
            Fit::Letterbox => self.letterbox(width, height),
            Fit::Stretch => self.stretch(width, height),
        };
        match pixels {
            Pixels::Rgb { data, .. } => {
                if placement.region.is_some() {
                    self.resized.buffer_mut().fill(self.spec.pad_value);
                }
                self.resize_rgb(width, height, data, &placement)?;
                self.normalize();
            }
            Pixels::Yuv(planes) => self.yuv_to_tensor(planes, &placement)?,
        }
        Ok((self.tensor.clone().into_tvalue(), placement.geometry))
    }

    fn options(&self) -> ResizeOptions {
        let filter = match self.spec.interpolation {
            Interpolation::BilinearAntialias => ResizeAlg::Convolution(FilterType::Bilinear),
            Interpolation::Bilinear => ResizeAlg::Interpolation(FilterType::Bilinear),
        };
        // No plane here has alpha, but fast_image_resize reads U8x2 (interleaved UV)
        // as luma and alpha, and would multiply U by V and divide it back, losing
        // levels of U where V is low.
        ResizeOptions::new().resize_alg(filter).use_alpha(false)
    }

    /// torchvision's `Resize(shorter)` then `CenterCrop(h, w)`, done as one resize of
    /// the source region that survives the crop.
    fn center_crop(&self, width: u32, height: u32) -> Result<Placement> {
        let (w, h) = (self.width, self.height);
        // Small photos are upscaled as torchvision does (ImageNet holds 160x170
        // ones), but past 4x every detail the model sees would be invented.
        let min_side = w.min(h).div_ceil(MAX_UPSCALE);
        if width.min(height) < min_side {
            return Err(Error::Frame {
                what: format!("{width}x{height} image"),
                message: format!(
                    "too small for the model's {w}x{h} crop: the shorter side must be at least {min_side} px"
                ),
            });
        }
        let (fw, fh) = (width as f64, height as f64);
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
        Ok(Placement {
            geometry: Geometry {
                scale_x: sx as f32,
                scale_y: sy as f32,
                offset_x: -left as f32,
                offset_y: -top as f32,
                frame_width: width,
                frame_height: height,
            },
            crop: Some((left / sx, top / sy, w as f64 / sx, h as f64 / sy)),
            region: None,
        })
    }

    /// YOLOv5's letterbox: keep the aspect ratio, centre, pad with grey.
    fn letterbox(&self, width: u32, height: u32) -> Placement {
        let (w, h) = (self.width as f64, self.height as f64);
        let (fw, fh) = (width as f64, height as f64);
        let gain = (w / fw).min(h / fh);
        let nw = ((fw * gain).round_ties_even() as u32).clamp(1, self.width);
        let nh = ((fh * gain).round_ties_even() as u32).clamp(1, self.height);
        // Ultralytics splits odd padding this way: round(d - 0.1) on the left/top.
        let left = ((w - nw as f64) / 2.0 - 0.1).round_ties_even().max(0.0) as u32;
        let top = ((h - nh as f64) / 2.0 - 0.1).round_ties_even().max(0.0) as u32;
        Placement {
            geometry: Geometry {
                scale_x: gain as f32,
                scale_y: gain as f32,
                offset_x: left as f32,
                offset_y: top as f32,
                frame_width: width,
                frame_height: height,
            },
            crop: None,
            region: Some((left, top, nw, nh)),
        }
    }

    fn stretch(&self, width: u32, height: u32) -> Placement {
        Placement {
            geometry: Geometry {
                scale_x: self.width as f32 / width as f32,
                scale_y: self.height as f32 / height as f32,
                offset_x: 0.0,
                offset_y: 0.0,
                frame_width: width,
                frame_height: height,
            },
            crop: None,
            region: None,
        }
    }

    /// The resize options for a plane subsampled by `(dx, dy)`.
    fn crop_options(
        &self,
        crop: Option<(f64, f64, f64, f64)>,
        (dx, dy): (f64, f64),
    ) -> ResizeOptions {
        let options = self.options();
        match crop {
            Some((l, t, w, h)) => options.crop(l / dx, t / dy, w / dx, h / dy),
            None => options,
        }
    }

    /// Resizes packed RGB into `self.resized`, or into its region.
    fn resize_rgb(
        &mut self,
        width: u32,
        height: u32,
        rgb: &[u8],
        placement: &Placement,
    ) -> Result<()> {
        let fail = resize_error(width, height);
        let src = ImageRef::new(width, height, rgb, PixelType::U8x3).map_err(|e| fail(&e))?;
        let options = self.crop_options(placement.crop, (1.0, 1.0));
        match placement.region {
            None => self.resizer.resize(&src, &mut self.resized, &options),
            Some((left, top, width, height)) => {
                let mut dst = CroppedImageMut::new(&mut self.resized, left, top, width, height)
                    .map_err(|e| fail(&e))?;
                self.resizer.resize(&src, &mut dst, &options)
            }
        }
        .map_err(|e| fail(&e))
    }

    /// YUV (4:2:0 or YUYV's 4:2:2): the luma and the chroma planes are resized to
    /// the model's size (chroma up to full resolution there, so colour edges stay as
    /// sharp as when converting first), then converted and normalized in one pass
    /// into the tensor, so a 1080p camera frame costs a model-sized conversion and
    /// no RGB image is made at any size.
    fn yuv_to_tensor(&mut self, planes: &YuvPlanes, placement: &Placement) -> Result<()> {
        let region = placement.region.unwrap_or((0, 0, self.width, self.height));
        let (_, _, rw, rh) = region;
        let mut scratch = match self.yuv.take() {
            Some(s) if (s.y.width(), s.y.height()) == (rw, rh) => s,
            _ => YuvScratch::new(rw, rh),
        };
        let result = self.resize_yuv_planes(planes, placement, &mut scratch);
        if let Ok(chroma) = &result {
            let chroma = match chroma {
                Plane::Planar => Chroma::Planar(scratch.u.buffer(), scratch.v.buffer()),
                Plane::Interleaved => Chroma::Interleaved(scratch.uv.buffer()),
            };
            self.write_yuv(scratch.y.buffer(), &chroma, planes.colour, region);
        }
        self.yuv = Some(scratch);
        result.map(|_| ())
    }

    /// The resized planes (`region`-sized) into the tensor, padding around them.
    fn write_yuv(&mut self, luma: &[u8], chroma: &Chroma, colour: Colour, region: Region) {
        let (left, top, rw, rh) = region;
        let (w, pad_value) = (self.width as usize, self.spec.pad_value as usize);
        let pad = [0, 1, 2].map(|c| self.lut[c][pad_value]);
        let rgb_plane = self.rgb_planes();
        let norm = Normalization {
            scale: self.spec.scale,
            mean: rgb_plane.map(|p| self.spec.mean[p]),
            std: rgb_plane.map(|p| self.spec.std[p]),
        };
        let [p0, p1, p2] = exclusive_planes(&mut self.tensor, w * self.height as usize);
        let mut planes = [p0, p1, p2];
        let (left, rw, top, rh) = (left as usize, rw as usize, top as usize, rh as usize);
        for (c, plane) in planes.iter_mut().enumerate() {
            for (y, row) in plane.chunks_exact_mut(w).enumerate() {
                if (top..top + rh).contains(&y) {
                    row[..left].fill(pad[c]);
                    row[left + rw..].fill(pad[c]);
                } else {
                    row.fill(pad[c]);
                }
            }
        }
        // Both channel orders are their own inverse: plane `rgb_plane[k]` is channel k.
        let [p0, p1, p2] = planes;
        let [r, g, b] = match self.spec.channels {
            ChannelOrder::Rgb => [p0, p1, p2],
            ChannelOrder::Bgr => [p2, p1, p0],
        };
        let rows = |plane| region_rows(plane, w, (left, top, rw, rh));
        let targets = rows(r).zip(rows(g)).zip(rows(b));
        let k = Coefficients::of(colour);
        for (y, (luma, ((r, g), b))) in luma.chunks_exact(rw).zip(targets).enumerate() {
            let chroma = match chroma {
                Chroma::Planar(u, v) => Chroma::Planar(&u[y * rw..][..rw], &v[y * rw..][..rw]),
                Chroma::Interleaved(uv) => Chroma::Interleaved(&uv[2 * y * rw..][..2 * rw]),
            };
            yuv444_to_tensor_row(luma, &chroma, &k, &norm, [r, g, b]);
        }
    }

    /// For R, G and B, the tensor plane it goes to (`channels` says the order).
    fn rgb_planes(&self) -> [usize; 3] {
        match self.spec.channels {
            ChannelOrder::Rgb => [0, 1, 2],
            ChannelOrder::Bgr => [2, 1, 0],
        }
    }

    /// Resizes the planes into `scratch`; says where the chroma went.
    fn resize_yuv_planes(
        &mut self,
        planes: &YuvPlanes,
        placement: &Placement,
        scratch: &mut YuvScratch,
    ) -> Result<Plane> {
        let (w, h) = (planes.width, planes.height);
        let fail = resize_error(w, h);
        let (across, down) = planes.subsampling;
        let luma_options = self.crop_options(placement.crop, (1.0, 1.0));
        let chroma_options = self.crop_options(placement.crop, (across.into(), down.into()));
        let y_src = ImageRef::new(w, h, planes.luma, PixelType::U8).map_err(|e| fail(&e))?;
        self.resizer
            .resize(&y_src, &mut scratch.y, &luma_options)
            .map_err(|e| fail(&e))?;
        let (cw, ch) = planes.chroma_size();
        let chroma = match planes.chroma {
            Chroma::Planar(u, v) => {
                for (plane, dst) in [(u, &mut scratch.u), (v, &mut scratch.v)] {
                    let src = ImageRef::new(cw, ch, plane, PixelType::U8).map_err(|e| fail(&e))?;
                    self.resizer
                        .resize(&src, dst, &chroma_options)
                        .map_err(|e| fail(&e))?;
                }
                Plane::Planar
            }
            Chroma::Interleaved(uv) => {
                let src = ImageRef::new(cw, ch, uv, PixelType::U8x2).map_err(|e| fail(&e))?;
                self.resizer
                    .resize(&src, &mut scratch.uv, &chroma_options)
                    .map_err(|e| fail(&e))?;
                Plane::Interleaved
            }
        };
        Ok(chroma)
    }

    /// Packed RGB8 → planar normalized f32, into the tensor of the previous frame
    /// when the model has let go of it.
    ///
    /// Written by hand: this interleaved-to-planar lookup is one pass over the
    /// pixels, and no image crate writes into a caller's f32 NCHW buffer.
    fn normalize(&mut self) {
        let plane = (self.width * self.height) as usize;
        let src_channel = self.rgb_planes();
        let [r, g, b] = exclusive_planes(&mut self.tensor, plane);
        let lut = &self.lut;
        for (i, px) in self.resized.buffer().chunks_exact(3).enumerate() {
            r[i] = lut[0][px[src_channel[0]] as usize];
            g[i] = lut[1][px[src_channel[1]] as usize];
            b[i] = lut[2][px[src_channel[2]] as usize];
        }
    }
}

/// The rows of a `width`-wide plane inside `(left, top, width, height)`.
fn region_rows(
    plane: &mut [f32],
    width: usize,
    (left, top, rw, rh): (usize, usize, usize, usize),
) -> impl Iterator<Item = &mut [f32]> {
    plane[top * width..(top + rh) * width]
        .chunks_exact_mut(width)
        .map(move |row| &mut row[left..left + rw])
}

/// Where the resized chroma is in [`YuvScratch`].
enum Plane {
    Planar,
    Interleaved,
}

/// Left, top, width, height of the resized image in the tensor.
type Region = (u32, u32, u32, u32);

/// The tensor's three planes (`plane` values each), writable: the tensor of the
/// previous frame when the model has let go of it, else a new one.
fn exclusive_planes(tensor: &mut Arc<Tensor>, plane: usize) -> [&mut [f32]; 3] {
    if Arc::get_mut(tensor).is_none() {
        log::debug!("input tensor still in use, allocating a new one");
        *tensor = Arc::new(tensor.deep_clone());
    }
    let tensor = Arc::get_mut(tensor).expect("tensor was just made exclusive");
    let out = tensor
        .to_plain_array_view_mut::<f32>()
        .expect("the input tensor is created in ram, as f32")
        .into_slice()
        .expect("the input tensor is created contiguous");
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    [r, g, b]
}

fn resize_error(width: u32, height: u32) -> impl Fn(&dyn std::fmt::Display) -> Error {
    move |e| Error::Frame {
        what: format!("{width}x{height} frame"),
        message: format!("resize failed: {e}"),
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
    use crate::frame::yuv::yuv444_to_rgb;
    use crate::frame::{Colour, PixelFormat, RawLayout, RgbFrame};
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

    /// `plane` (rows of `row` bytes) with each row padded to `stride` bytes with 0xFF.
    fn padded(plane: &[u8], row: usize, stride: usize) -> Vec<u8> {
        plane
            .chunks(row)
            .flat_map(|r| {
                r.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0xFF, stride - row))
            })
            .collect()
    }

    /// BT.601 limited-range I420, NV12 or YUYV of `frame` (cropped to even size),
    /// each row padded to `stride` bytes (of the luma plane, or of YUYV's one plane)
    /// with 0xFF. Also the reference for that frame: converted back to RGB whole,
    /// each chroma sample repeated over the pixels that share it.
    fn yuv(frame: &RgbFrame, format: PixelFormat, stride: u32) -> (RawLayout, Vec<u8>, RgbFrame) {
        let (w, h) = ((frame.width & !1) as usize, (frame.height & !1) as usize);
        let (across, down) = format.chroma_subsampling().unwrap();
        let (across, down) = (across as usize, down as usize);
        // ffmpeg's rgb24 → yuv420p coefficients.
        let px = |x: usize, y: usize| {
            let i = (y * frame.width as usize + x) * 3;
            let [r, g, b] = [0, 1, 2].map(|c| frame.data[i + c] as f32);
            [
                16.0 + 0.257 * r + 0.504 * g + 0.098 * b,
                128.0 - 0.148 * r - 0.291 * g + 0.439 * b,
                128.0 + 0.439 * r - 0.368 * g - 0.071 * b,
            ]
        };
        let luma: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).map(move |x| px(x, y)[0].round() as u8))
            .collect();
        // Each chroma sample: the mean over the pixels that share it.
        let (cw, ch) = (w / across, h / down);
        let mean = |cx: usize, cy: usize, c: usize| {
            let block: Vec<f32> = (0..down)
                .flat_map(|dy| (0..across).map(move |dx| (dx, dy)))
                .map(|(dx, dy)| px(cx * across + dx, cy * down + dy)[c])
                .collect();
            (block.iter().sum::<f32>() / block.len() as f32).round() as u8
        };
        let u: Vec<u8> = (0..ch)
            .flat_map(|cy| (0..cw).map(move |cx| (cx, cy)))
            .map(|(cx, cy)| mean(cx, cy, 1))
            .collect();
        let v: Vec<u8> = (0..ch)
            .flat_map(|cy| (0..cw).map(move |cx| (cx, cy)))
            .map(|(cx, cy)| mean(cx, cy, 2))
            .collect();
        let uv: Vec<u8> = u.iter().zip(&v).flat_map(|(u, v)| [*u, *v]).collect();
        let s = stride as usize;
        let bytes = match format {
            PixelFormat::I420 => [
                padded(&luma, w, s),
                padded(&u, cw, s / 2),
                padded(&v, cw, s / 2),
            ]
            .concat(),
            PixelFormat::Nv12 => [padded(&luma, w, s), padded(&uv, 2 * cw, s)].concat(),
            _ => {
                let yuyv: Vec<u8> = luma
                    .chunks(2)
                    .zip(uv.chunks(2))
                    .flat_map(|(y, uv)| [y[0], uv[0], y[1], uv[1]])
                    .collect();
                padded(&yuyv, 2 * w, s)
            }
        };
        let at = |i: usize| (i / w / down) * cw + (i % w) / across;
        let u444: Vec<u8> = (0..w * h).map(|i| u[at(i)]).collect();
        let v444: Vec<u8> = (0..w * h).map(|i| v[at(i)]).collect();
        let mut rgb = vec![0; w * h * 3];
        let chroma = Chroma::Planar(&u444, &v444);
        yuv444_to_rgb(&luma, &chroma, Colour::default(), &mut rgb);
        let layout = RawLayout::new(format, w as u32, h as u32, Some(stride)).unwrap();
        (
            layout,
            bytes,
            RgbFrame::new(w as u32, h as u32, rgb).unwrap(),
        )
    }

    fn run_raw(
        spec: &InputSpec,
        size: u32,
        layout: &RawLayout,
        bytes: &[u8],
    ) -> (Vec<f32>, Geometry) {
        let raw = FrameRef::Raw {
            layout,
            bytes,
            colour: Colour::default(),
        };
        let (tensor, geometry) = Preprocessor::new(spec, size, size).run(raw).unwrap();
        (
            crate::decode::f32_values(&tensor).unwrap().to_vec(),
            geometry,
        )
    }

    const YUV_FORMATS: [PixelFormat; 3] = [PixelFormat::I420, PixelFormat::Nv12, PixelFormat::Yuyv];

    /// A flat colour through each YUV format, padded or not, comes out as itself
    /// (within the rounding of 8-bit YUV).
    #[test]
    fn each_yuv_format_keeps_a_flat_colour() {
        for rgb in [[200, 40, 90], [30, 160, 220]] {
            let frame = uniform(6, 4, rgb);
            for format in YUV_FORMATS {
                let row = if format == PixelFormat::Yuyv { 12 } else { 6 };
                for stride in [row, row + 2] {
                    let (layout, bytes, _) = yuv(&frame, format, stride);
                    let (values, _) = run_raw(&spec("stretch", ""), 4, &layout, &bytes);
                    for (c, channel) in values.chunks(16).enumerate() {
                        for v in channel {
                            let want = f32::from(rgb[c]);
                            assert!(
                                (v - want).abs() <= 2.0,
                                "{format:?} {stride}: {v} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Resizing YUV (4:2:0, YUYV's 4:2:2) before converting it gives what converting
    /// the whole frame and resizing the RGB gives, up to rounding: same geometry,
    /// pixels within a few levels on average. The whole frame is converted with the
    /// same per-pixel formula, each chroma sample repeated over its pixels.
    #[test]
    fn yuv_is_resized_before_conversion_with_the_same_result() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let photo = RgbFrame::open(&root.join("tests/data/images/bus.jpg")).unwrap();
        let cases = [
            (spec("center-crop", "resize_shorter=110"), 96),
            (spec("letterbox", "pad_value=114"), 128),
            (spec("stretch", ""), 64),
        ];
        for (spec, size) in cases {
            let mut i420 = Vec::new();
            for format in YUV_FORMATS {
                let row = (photo.width & !1) * if format == PixelFormat::Yuyv { 2 } else { 1 };
                let (layout, bytes, whole) = yuv(&photo, format, row);
                let (a, geo_a) = run_raw(&spec, size, &layout, &bytes);
                // Padded rows (rpicam-vid, GStreamer) change nothing.
                let (layout, bytes, _) = yuv(&photo, format, row + 64);
                let (padded, _) = run_raw(&spec, size, &layout, &bytes);
                assert!(
                    a == padded,
                    "{:?} {format:?}: row padding leaks in",
                    spec.fit
                );
                // NV12 holds the same samples as I420, interleaved.
                match format {
                    PixelFormat::I420 => i420.clone_from(&a),
                    PixelFormat::Nv12 => assert!(a == i420, "{:?}: NV12 is not I420", spec.fit),
                    _ => {}
                }
                let mut via_rgb = Preprocessor::new(&spec, size, size);
                let (b, geo_b) = via_rgb.run(&whole).unwrap();
                assert_eq!(geo_a, geo_b);
                let b = crate::decode::f32_values(&b).unwrap();
                let diffs: Vec<f32> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
                let share = |levels: f32| {
                    diffs.iter().filter(|d| **d <= levels).count() as f32 / diffs.len() as f32
                };
                let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
                eprintln!(
                    "{:?} {format:?}: mean |diff| {mean:.3} levels, {:.2}% within 4, {:.3}% within 16",
                    spec.fit,
                    share(4.0) * 100.0,
                    share(16.0) * 100.0
                );
                // Measured: mean 0.36–1.1 levels, at least 99.996% within 16.
                assert!(mean < 2.0, "{:?} {format:?}: mean {mean}", spec.fit);
                assert!(share(16.0) > 0.999, "{:?} {format:?}", spec.fit);
            }
        }
    }

    #[test]
    fn a_truncated_yuv_frame_is_an_error() {
        let layout = RawLayout::new(PixelFormat::I420, 8, 8, None).unwrap();
        let bytes = vec![0; 95];
        let raw = FrameRef::Raw {
            layout: &layout,
            bytes: &bytes,
            colour: Default::default(),
        };
        let mut pre = Preprocessor::new(&spec("stretch", ""), 4, 4);
        let err = pre.run(raw).unwrap_err().to_string();
        assert!(err.contains("expected 96 bytes, got 95"), "{err}");
    }
}
