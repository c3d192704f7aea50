//! File names in dataset records are untrusted: a record must not make us open a file
//! outside the dataset root, whether by an absolute path, a `..` component or a symlink.
use crate::report::DatasetError;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The dataset root, canonicalized once so every resolved file can be checked to lie
/// inside it.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    canonical: PathBuf,
}

impl Root {
    pub(crate) fn open(root: &Path) -> Result<Root, DatasetError> {
        let canonical = root.canonicalize().map_err(|source| DatasetError::Root {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(Root { canonical })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.canonical
    }

    /// Resolves `rel` (built from [`untrusted`] parts) to an existing file inside the
    /// root. Canonicalizing follows symlinks, so the `starts_with` check also catches
    /// a link that points out of the root.
    pub(crate) fn existing_file(&self, rel: &Path, what: &str) -> Result<PathBuf, String> {
        let joined = self.canonical.join(rel);
        let resolved = match joined.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!("{what} missing: {}", joined.display()))
            }
            Err(e) => return Err(format!("{what} unreadable: {}: {e}", joined.display())),
        };
        if !resolved.starts_with(&self.canonical) {
            return Err(format!(
                "{what} path escapes the dataset root: {}",
                rel.display()
            ));
        }
        if !resolved.is_file() {
            return Err(format!("{what} is not a file: {}", joined.display()));
        }
        Ok(resolved)
    }

    /// Resolves an image, reads its header and checks that the file is whole: a full
    /// decode per record would make checking a 100k-question split take minutes, and
    /// would not catch truncation anyway (the JPEG decoder fills a cut file with grey).
    pub(crate) fn image(&self, rel: &Path) -> Result<PathBuf, String> {
        let path = self.existing_file(rel, "image")?;
        let unreadable = |why: String| format!("image unreadable: {}: {why}", path.display());
        let reader = image::ImageReader::open(&path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| unreadable(e.to_string()))?;
        let format = reader.format();
        match reader.into_dimensions() {
            Ok((w, h)) if w > 0 && h > 0 => {}
            Ok((w, h)) => return Err(format!("image unreadable: {} is {w}x{h}", path.display())),
            Err(e) => return Err(unreadable(e.to_string())),
        }
        match format {
            Some(f) => whole(&path, f).map_err(unreadable)?,
            None => return Err(unreadable("unknown format".into())),
        }
        Ok(path)
    }
}

/// Checks that an image file was not cut short: a JPEG's entropy-coded data must be
/// followed by its end-of-image marker, a PNG must end with its IEND chunk. Only the
/// tail is read unless a JPEG carries data after its end marker.
fn whole(path: &Path, format: image::ImageFormat) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    const PNG_END: [u8; 12] = [0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82];
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(len.saturating_sub(4096)))
        .and_then(|_| file.read_to_end(&mut tail))
        .map_err(|e| e.to_string())?;
    match format {
        image::ImageFormat::Png if !tail.ends_with(&PNG_END) => {
            Err("truncated: no IEND chunk at the end".into())
        }
        image::ImageFormat::Jpeg => {
            let end = tail
                .iter()
                .rposition(|&b| b != 0 && !b.is_ascii_whitespace())
                .map_or(&tail[..0], |i| &tail[..=i]);
            if end.ends_with(&[0xff, 0xd9]) {
                return Ok(());
            }
            // Some writers append data after the end marker: look for it after the
            // first start-of-scan, walking the marker segments before it.
            let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
            if jpeg_has_end_after_scan(&bytes) {
                Ok(())
            } else {
                Err("truncated: no end-of-image marker after the scan data".into())
            }
        }
        _ => Ok(()),
    }
}

/// Walks JPEG marker segments from SOI to the first SOS, then looks for EOI in the scan
/// data (where 0xFF is always stuffed or a marker, so FF D9 can only be EOI).
fn jpeg_has_end_after_scan(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() {
        if bytes[i] != 0xff {
            return false;
        }
        let marker = bytes[i + 1];
        if marker == 0xff {
            i += 1;
            continue;
        }
        let seg = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if marker == 0xda {
            return bytes[i + 2 + seg.min(bytes.len() - i - 2)..]
                .windows(2)
                .any(|w| w == [0xff, 0xd9]);
        }
        i += 2 + seg;
    }
    false
}

/// Accepts a file name taken from a record only if it is a relative path made of
/// plain components (no root, no `..`, no `.`-only or empty name).
pub(crate) fn untrusted(name: &str) -> Result<&Path, String> {
    let path = Path::new(name);
    let plain = !name.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(path)
    } else {
        Err(format!("path escapes the dataset root: `{name}`"))
    }
}

/// Split names end up in file names, so they get the same treatment as record data,
/// and must be a single component.
pub(crate) fn check_split(split: &str) -> Result<(), DatasetError> {
    let single = untrusted(split)
        .map(|p| p.components().count() == 1)
        .unwrap_or(false);
    if single {
        Ok(())
    } else {
        Err(DatasetError::InvalidSplitName {
            split: split.to_string(),
        })
    }
}

/// Reads a whole annotations file; a missing file is reported by the caller as an
/// unknown split, so the `NotFound` case is passed back separately.
pub(crate) fn read_annotations(path: &Path) -> Result<Option<String>, DatasetError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DatasetError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, DatasetError> {
    serde_json::from_str(text).map_err(|source| DatasetError::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_rejects_escapes() {
        assert!(untrusted("a/b.jpg").is_ok());
        assert!(untrusted("image.png").is_ok());
        for bad in ["", "/etc/passwd", "../x.png", "a/../../b", ".", "./a"] {
            assert!(untrusted(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn split_names_are_single_plain_components() {
        assert!(check_split("val").is_ok());
        for bad in ["", "..", "a/b", "/val"] {
            assert!(check_split(bad).is_err(), "{bad} accepted");
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlink_out_of_root_is_rejected() -> Result<(), Box<dyn std::error::Error>> {
        let outside = tempfile::tempdir()?;
        let secret = outside.path().join("secret.jpg");
        std::fs::write(&secret, b"not an image")?;
        let root_dir = tempfile::tempdir()?;
        std::os::unix::fs::symlink(&secret, root_dir.path().join("link.jpg"))?;
        let root = Root::open(root_dir.path())?;
        let err = root
            .image(Path::new("link.jpg"))
            .err()
            .ok_or("symlink accepted")?;
        assert!(err.contains("escapes"), "{err}");
        Ok(())
    }
}

#[cfg(test)]
mod truncation {
    use super::*;

    /// A 96x96 image of noise in `format`, cut after `keep` of its bytes, then `extra`.
    fn image_file(dir: &Path, format: image::ImageFormat, keep: f64, extra: &[u8]) -> PathBuf {
        let img = image::RgbImage::from_fn(96, 96, |x, y| {
            let v = (x * 7919 + y * 104_729) as u8;
            image::Rgb([v, v.wrapping_mul(3), v.wrapping_add(91)])
        });
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, format).unwrap();
        let bytes = bytes.into_inner();
        let mut cut = bytes[..(bytes.len() as f64 * keep) as usize].to_vec();
        cut.extend_from_slice(extra);
        let path = dir.join(format!(
            "{keep}-{}.{}",
            extra.len(),
            format.extensions_str()[0]
        ));
        std::fs::write(&path, cut).unwrap();
        path
    }

    #[test]
    fn cut_images_are_unreadable_whole_ones_pass() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let name = |p: &PathBuf| PathBuf::from(p.file_name().unwrap());
        for format in [image::ImageFormat::Jpeg, image::ImageFormat::Png] {
            let ok = image_file(dir.path(), format, 1.0, b"");
            assert!(root.image(&name(&ok)).is_ok(), "{format:?} whole");
            for keep in [0.95, 0.6, 0.3] {
                let cut = image_file(dir.path(), format, keep, b"");
                let err = root.image(&name(&cut)).unwrap_err();
                assert!(err.contains("unreadable"), "{format:?} {keep}: {err}");
            }
        }
        // Data after the end marker (some cameras write it) is not truncation.
        let trailing = image_file(dir.path(), image::ImageFormat::Jpeg, 1.0, b"TRAILER\0\0");
        assert!(root.image(&name(&trailing)).is_ok());
    }
}
