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

    /// Resolves an image and reads only its header: a full decode per record would make
    /// checking a 100k-question split take minutes.
    pub(crate) fn image(&self, rel: &Path) -> Result<PathBuf, String> {
        let path = self.existing_file(rel, "image")?;
        let dims = image::ImageReader::open(&path)
            .and_then(|r| r.with_guessed_format())
            .map_err(image::ImageError::from)
            .and_then(|r| r.into_dimensions());
        match dims {
            Ok((w, h)) if w > 0 && h > 0 => Ok(path),
            Ok((w, h)) => Err(format!("image unreadable: {} is {w}x{h}", path.display())),
            Err(e) => Err(format!("image unreadable: {}: {e}", path.display())),
        }
    }
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
