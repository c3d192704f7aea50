//! Dataset loaders (A-OKVQA, ScienceQA, VCR) into one [`tsst_messages::Question`]
//! type, selection and sharding, and the synthetic visual-reasoning benchmark.
//!
//! Loading never fails on a bad record: it is reported as a [`BadRecord`] and the
//! rest load. Only whole-file problems are [`DatasetError`]s. A loaded question's
//! `image` is the canonical (absolute, symlink-free) path, checked to lie inside the
//! dataset root and to have a readable image header.
pub mod aokvqa;
pub mod check;
mod paths;
pub mod pyrandom;
pub mod report;
pub mod rng;
pub mod scienceqa;
pub mod select;
pub mod shard;
pub mod synth;
pub mod vcr;
pub mod vcr_text;

use std::path::Path;
use tsst_messages::DataSource;

pub use check::{check, CheckReport, SplitReport};
pub use report::{BadRecord, DatasetError, Loaded};
pub use rng::SplitMix64;
pub use select::{select, Selected, Selection};
pub use shard::{shard, shard_of};

/// Loads one split in file order (see [`select::dataset_order`] for the order that
/// `data_partition` indexes).
pub fn load(source: DataSource, root: &Path, split: &str) -> Result<Loaded, DatasetError> {
    match source {
        DataSource::Aokvqa => aokvqa::load(root, split),
        DataSource::Scienceqa => scienceqa::load(root, split),
        DataSource::Vcr => vcr::load(root, split),
    }
}

/// The splits present under `root`: A-OKVQA annotation files, ScienceQA
/// `pid_splits.json` keys, VCR `*.jsonl` files.
pub fn splits(source: DataSource, root: &Path) -> Result<Vec<String>, DatasetError> {
    match source {
        DataSource::Aokvqa => aokvqa::splits(root),
        DataSource::Scienceqa => scienceqa::splits(root),
        DataSource::Vcr => vcr::splits(root),
    }
}

/// Orders split names train, val, test, then the rest by name, so reports list the
/// usual splits first whatever order the directory or JSON object gave.
pub(crate) fn sort_splits(splits: &mut [String]) {
    let rank = |s: &str| {
        ["train", "val", "test"]
            .iter()
            .position(|known| *known == s)
            .unwrap_or(3)
    };
    splits.sort_by(|a, b| (rank(a), a).cmp(&(rank(b), b)));
}

/// Loads `selection.split` and applies the selection (dataset order, partition,
/// sample); the bad records of the whole split are kept for reporting.
pub fn load_selection(
    source: DataSource,
    root: &Path,
    selection: &Selection,
) -> Result<Selected, DatasetError> {
    select(source, load(source, root, &selection.split)?, selection)
}
