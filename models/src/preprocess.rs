//! LLaVA-1.5 image preprocessing (`image_aspect_ratio=pad`): pad to a square with the
//! mean colour, resize the shortest side bicubically, centre crop, scale to [0, 1] and
//! normalise per channel, as CHW float32.
//!
//! The resize reproduces PIL's `Image.resize(.., BICUBIC)` bit for bit (what LLaVA's
//! CLIP image processor and the export tool's goldens use): Keys cubic with a = -0.5,
//! support widened by the scale when shrinking, 22-bit fixed-point weights, a
//! horizontal then a vertical pass, each rounded to 8 bits. The image crate's
//! Catmull-Rom filter differs by a level here and there, which moved the tiny
//! fixture's value by 6e-3.
use crate::manifest::Vision;
use image::{imageops, Rgb, RgbImage};
use std::path::Path;

/// One preprocessed image: `3 * size * size` values, channel-major.
pub type Pixels = Vec<f32>;

/// Reads and preprocesses the image at `path`; the error names the file.
pub fn load(path: &Path, vision: &Vision) -> Result<Pixels, String> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(image::ImageError::from)
        .and_then(|r| r.decode())
        .map_err(|e| format!("image unreadable: {}: {e}", path.display()))?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(format!("image unreadable: {} is {w}x{h}", path.display()));
    }
    Ok(pixels(&img.to_rgb8(), vision))
}

/// Preprocesses a decoded RGB image.
pub fn pixels(img: &RgbImage, vision: &Vision) -> Pixels {
    normalise(&prepared(img, vision), vision)
}

/// The 8-bit `image_size` square that gets normalised: padded, resized, cropped.
pub fn prepared(img: &RgbImage, vision: &Vision) -> RgbImage {
    let square = expand_to_square(img, Rgb(vision.pad_color));
    let size = vision.image_size;
    // The square is resized straight to `size`: resizing its shortest side to `size`
    // keeps it square, so the centre crop that follows is the identity.
    let resized = if square.width() == size {
        square
    } else {
        resize_bicubic(&square, size, size)
    };
    centre_crop(resized, size)
}

/// Pastes the image centred on a square canvas of its longer side, as LLaVA's
/// `expand2square` does (the offset rounds down).
fn expand_to_square(img: &RgbImage, fill: Rgb<u8>) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == h {
        return img.clone();
    }
    let side = w.max(h);
    let mut canvas = RgbImage::from_pixel(side, side, fill);
    let x = (side - w) / 2;
    let y = (side - h) / 2;
    imageops::replace(&mut canvas, img, i64::from(x), i64::from(y));
    canvas
}

/// PIL's fixed-point precision for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output position, the first input position and the fixed-point weights
/// of the inputs it mixes.
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i64>)> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (f64::from(xx) + 0.5) * scale;
            // PIL truncates toward zero here (a C cast), then clamps.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) as usize;
            let weights: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    if w < 0.0 {
                        (scaled - 0.5) as i64
                    } else {
                        (scaled + 0.5) as i64
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS) << 8 {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// PIL's BICUBIC resize of an 8-bit RGB image.
fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let half = 1i64 << (PRECISION_BITS - 1);
    let horizontal = if width == w {
        img.clone()
    } else {
        let coeffs = coefficients(w, width);
        RgbImage::from_fn(width, h, |x, y| {
            let (start, k) = &coeffs[x as usize];
            let mut px = [0u8; 3];
            for (c, out) in px.iter_mut().enumerate() {
                let sum: i64 = k
                    .iter()
                    .enumerate()
                    .map(|(i, w)| i64::from(img.get_pixel((start + i) as u32, y).0[c]) * w)
                    .sum();
                *out = clip8(half + sum);
            }
            Rgb(px)
        })
    };
    if height == h {
        return horizontal;
    }
    let coeffs = coefficients(h, height);
    RgbImage::from_fn(width, height, |x, y| {
        let (start, k) = &coeffs[y as usize];
        let mut px = [0u8; 3];
        for (c, out) in px.iter_mut().enumerate() {
            let sum: i64 = k
                .iter()
                .enumerate()
                .map(|(i, w)| i64::from(horizontal.get_pixel(x, (start + i) as u32).0[c]) * w)
                .sum();
            *out = clip8(half + sum);
        }
        Rgb(px)
    })
}

fn centre_crop(img: RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == size && h == size {
        return img;
    }
    let x = w.saturating_sub(size) / 2;
    let y = h.saturating_sub(size) / 2;
    imageops::crop_imm(&img, x, y, size.min(w), size.min(h)).to_image()
}

fn normalise(img: &RgbImage, vision: &Vision) -> Pixels {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (x, y, px) in img.enumerate_pixels() {
        let i = (y * w + x) as usize;
        for c in 0..3 {
            let v = f32::from(px.0[c]) / 255.0;
            out[c * plane + i] = (v - vision.mean[c]) / vision.std[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vision(size: u32) -> Vision {
        Vision {
            file: String::new(),
            input: String::new(),
            output: String::new(),
            image_size: size,
            num_image_tokens: 1,
            mean: [0.5, 0.5, 0.5],
            std: [0.5, 0.5, 0.5],
            pad_color: [10, 20, 30],
        }
    }

    #[test]
    fn pads_wide_images_with_the_mean_colour() {
        let img = RgbImage::from_pixel(4, 2, Rgb([255, 255, 255]));
        let sq = expand_to_square(&img, Rgb([10, 20, 30]));
        assert_eq!(sq.dimensions(), (4, 4));
        assert_eq!(sq.get_pixel(0, 0).0, [10, 20, 30]);
        assert_eq!(sq.get_pixel(0, 1).0, [255, 255, 255]);
        assert_eq!(sq.get_pixel(3, 2).0, [255, 255, 255]);
        assert_eq!(sq.get_pixel(3, 3).0, [10, 20, 30]);
    }

    #[test]
    fn normalises_channel_major() {
        let img = RgbImage::from_pixel(2, 2, Rgb([255, 0, 255]));
        let p = pixels(&img, &vision(2));
        assert_eq!(p.len(), 12);
        assert_eq!(&p[0..4], &[1.0; 4]);
        assert_eq!(&p[4..8], &[-1.0; 4]);
        assert_eq!(&p[8..12], &[1.0; 4]);
    }

    #[test]
    fn resizes_to_the_model_size() {
        let img = RgbImage::from_pixel(30, 20, Rgb([1, 2, 3]));
        assert_eq!(pixels(&img, &vision(8)).len(), 3 * 64);
    }

    #[test]
    fn unreadable_files_are_errors() {
        let err = load(Path::new("/nonexistent.png"), &vision(2)).unwrap_err();
        assert!(err.contains("/nonexistent.png"));
    }
}
