//! Writes the tiny images of the committed test fixtures (`tests/fixtures/`).
//! Run once after changing the list below; the images are committed, the tests never
//! generate them. Each image is 8x8 with its own colour so no two files are identical.
use image::{ImageFormat, Rgb, RgbImage};
use std::error::Error;
use std::path::Path;

const IMAGES: &[&str] = &[
    "aokvqa/val2017/000000461751.jpg",
    "aokvqa/val2017/000000057266.jpg",
    "aokvqa/val2017/000000171757.jpg",
    "aokvqa/val2017/000000296016.jpg",
    "aokvqa/val2017/000000505560.jpg",
    "aokvqa/val2017/000000224107.jpg",
    "broken/aokvqa/val2017/000000001001.jpg",
    "broken/aokvqa/val2017/000000001002.jpg",
    "scienceqa/images/train/1/image.png",
    "scienceqa/images/test/5/image.png",
    "scienceqa/images/test/11/image.png",
    "scienceqa/images/test/23/image.png",
    "broken/scienceqa/images/test/100/image.png",
    "vcr/vcr1images/lsmdc_3015_CHARLIE_ST_CLOUD/3015_CHARLIE_ST_CLOUD_00.23.57.935-00.24.00.783@0.jpg",
    "vcr/vcr1images/movieclips_Ghost_Rider/DKmTBMaVd5s@22.jpg",
    "broken/vcr/vcr1images/movieclips_Broken/clip@1.jpg",
];

fn main() -> Result<(), Box<dyn Error>> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    for (n, rel) in IMAGES.iter().enumerate() {
        let path = fixtures.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let shade = (n as u8).wrapping_mul(37);
        let img = RgbImage::from_fn(8, 8, |x, y| Rgb([shade, (x * 32) as u8, (y * 32) as u8]));
        let format = if rel.ends_with(".png") {
            ImageFormat::Png
        } else {
            ImageFormat::Jpeg
        };
        img.save_with_format(&path, format)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
