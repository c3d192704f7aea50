//! Writes the annotation files, the images and `synth_meta.json`.
use super::{
    draw, MetaOptions, QuestionMeta, SynthError, SynthMeta, SynthOptions, SynthQuestion, META_FILE,
    SPLITS, SYNTH_FORMAT, SYNTH_VERSION,
};
use crate::aokvqa::{annotations_file, image_rel_path, AokvqaRecord};
use image::codecs::jpeg::JpegEncoder;
use image::ExtendedColorType;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T, pretty: bool) -> Result<(), SynthError> {
    let bytes = if pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    }
    .map_err(|source| SynthError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    fs::write(path, bytes).map_err(io_err(path))
}

/// Encodes one scene. JPEG encoding in `image` is deterministic for a given buffer
/// and quality, which the byte-identity guarantee relies on (and the tests check).
fn jpeg(q: &SynthQuestion, quality: u8, path: &Path) -> Result<Vec<u8>, SynthError> {
    let side = q.scene.canvas;
    let pixels = draw::render(&q.scene);
    let mut bytes = Vec::with_capacity(pixels.len() / 8);
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(&pixels, side, side, ExtendedColorType::Rgb8)
        .map_err(|source| SynthError::Image {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// Writes everything; returns the number of images written.
pub(crate) fn write_all(opts: &SynthOptions, qs: &[SynthQuestion]) -> Result<usize, SynthError> {
    let out = &opts.out;
    fs::create_dir_all(out).map_err(io_err(out))?;
    for split in SPLITS {
        let records: Vec<&AokvqaRecord> = qs
            .iter()
            .filter(|q| q.record.split == split)
            .map(|q| &q.record)
            .collect();
        write_json(&out.join(annotations_file(split)), &records, false)?;
        if opts.write_images {
            let dir = out.join(format!("{split}2017"));
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
    }
    let images = if opts.write_images {
        write_images(opts, qs)?
    } else {
        0
    };
    write_json(&out.join(META_FILE), &meta(opts, qs), true)?;
    Ok(images)
}

/// Renders and encodes on several threads: each image depends only on its own
/// scene, so the split into chunks cannot change any byte.
fn write_images(opts: &SynthOptions, qs: &[SynthQuestion]) -> Result<usize, SynthError> {
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        n => n,
    };
    let chunk = qs.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = qs
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> Result<usize, SynthError> {
                    for q in part {
                        let path = opts
                            .out
                            .join(image_rel_path(&q.record.split, q.record.image_id));
                        let bytes = jpeg(q, opts.jpeg_quality, &path)?;
                        fs::write(&path, bytes).map_err(io_err(&path))?;
                    }
                    Ok(part.len())
                })
            })
            .collect();
        // Joined in order, so the error reported is the first chunk's, whatever
        // the timing.
        let mut written = 0;
        for w in workers {
            written += w.join().map_err(|_| SynthError::WorkerPanicked)??;
        }
        Ok(written)
    })
}

pub(crate) fn meta(opts: &SynthOptions, qs: &[SynthQuestion]) -> SynthMeta {
    let (objects_min, objects_max) = opts.difficulty.objects();
    let counts = opts.splits.counts(opts.n);
    SynthMeta {
        format: SYNTH_FORMAT.to_string(),
        version: SYNTH_VERSION,
        options: MetaOptions {
            n: opts.n,
            seed: opts.seed,
            difficulty: opts.difficulty,
            splits: opts.splits,
            image_size: opts.image_size,
            jpeg_quality: opts.jpeg_quality,
            images: opts.write_images,
            grid: opts.difficulty.grid(),
            objects_min,
            objects_max,
            kinds: opts.difficulty.kinds().to_vec(),
        },
        split_counts: SPLITS
            .iter()
            .zip(counts)
            .map(|(s, n)| (s.to_string(), n))
            .collect(),
        questions: qs
            .iter()
            .map(|q| {
                let meta = QuestionMeta {
                    split: q.record.split.clone(),
                    index: q.index,
                    image_id: q.record.image_id,
                    kind: q.kind,
                    difficulty: q.difficulty,
                    steps: q.steps,
                    answer: q
                        .record
                        .choices
                        .get(q.record.correct_choice_idx)
                        .cloned()
                        .unwrap_or_default(),
                    correct_choice_idx: q.record.correct_choice_idx,
                    num_objects: q.scene.objects.len(),
                    query: q.query.clone(),
                    scene: q.scene.clone(),
                };
                (q.record.question_id.clone(), meta)
            })
            .collect::<BTreeMap<_, _>>(),
    }
}
