//! Which questions of a loaded split a run uses: dataset order, `data_partition`,
//! `sample_size`, all reproducible from the seed.
use crate::pyrandom::PyRandom;
use crate::report::{BadRecord, DatasetError, Loaded};
use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tsst_messages::{DataSource, Partition, Question};

pub use crate::shard::{shard, shard_of};

/// What to take from a split. `partition` is applied first (to the dataset order of
/// every record with a place in it, bad ones included), then `sample_size` draws from
/// what the partition left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub split: String,
    /// `'a_b'`: questions a through b inclusive, 0-based.
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub sample_size: Option<usize>,
    #[serde(default)]
    pub seed: u64,
}

impl Selection {
    /// The whole split in dataset order.
    pub fn all(split: impl Into<String>, seed: u64) -> Self {
        Selection {
            split: split.into(),
            partition: None,
            sample_size: None,
            seed,
        }
    }
}

/// Items `a` through `b` inclusive of `items`; `split` only names the split in the
/// error.
pub fn partition<T>(items: Vec<T>, spec: &str, split: &str) -> Result<Vec<T>, DatasetError> {
    let p: Partition = spec.parse().map_err(|reason| DatasetError::BadPartition {
        spec: spec.to_string(),
        reason,
    })?;
    if p.end >= items.len() {
        return Err(DatasetError::PartitionPastEnd {
            spec: spec.trim().to_string(),
            split: split.to_string(),
            len: items.len(),
        });
    }
    Ok(items.into_iter().skip(p.start).take(p.len()).collect())
}

/// Draws `n` items without replacement, seeded; the drawn ones keep their order.
pub fn sample<T>(items: Vec<T>, n: usize, seed: u64, split: &str) -> Result<Vec<T>, DatasetError> {
    if n > items.len() {
        return Err(DatasetError::SampleTooLarge {
            requested: n,
            available: items.len(),
            split: split.to_string(),
        });
    }
    // Partial Fisher-Yates over the indices: the first n slots are a uniform draw.
    let mut indices: Vec<usize> = (0..items.len()).collect();
    let mut rng = SplitMix64::new(seed);
    for i in 0..n {
        let j = i + rng.below((indices.len() - i) as u64) as usize;
        indices.swap(i, j);
    }
    let mut keep = vec![false; items.len()];
    for &i in &indices[..n] {
        keep[i] = true;
    }
    Ok(items
        .into_iter()
        .zip(keep)
        .filter_map(|(q, k)| k.then_some(q))
        .collect())
}

/// VCR's dataset order, as the original tool: ids sorted (code point order, as
/// Python's `sorted` on str), then `random.seed(seed); random.shuffle(ids)`.
pub fn vcr_order(ids: &mut [String], seed: u64) {
    ids.sort();
    PyRandom::new(seed).shuffle(ids);
}

/// Puts a split's ids (file order) into the order `data_partition` indexes:
/// VCR is sorted and shuffled; A-OKVQA and ScienceQA keep file order.
pub fn dataset_order(source: DataSource, ids: &mut [String], seed: u64) {
    if source == DataSource::Vcr {
        vcr_order(ids, seed);
    }
}

/// What a selection took from a split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selected {
    /// The selected ids, in dataset order.
    pub ids: Vec<String>,
    /// Each selected id's index in the dataset order (what `data_partition` counts).
    pub positions: Vec<usize>,
    /// The selected questions that loaded, in the same order.
    pub questions: Vec<Question>,
    /// The selected records that failed to load, in the same order.
    pub failed: Vec<BadRecord>,
    /// Records in the split, bad ones included.
    pub split_records: usize,
    /// Every bad record of the split, selected or not.
    pub split_bad: Vec<BadRecord>,
}

/// Applies dataset order to every placed record of the split, then the partition, then
/// the sample; bad records are dropped only then, so they move no index.
pub fn select(
    source: DataSource,
    loaded: Loaded,
    selection: &Selection,
) -> Result<Selected, DatasetError> {
    let split_records = loaded.total();
    let mut order = loaded.order;
    dataset_order(source, &mut order, selection.seed);
    let mut ids: Vec<(usize, String)> = order.into_iter().enumerate().collect();
    if let Some(spec) = &selection.partition {
        ids = partition(ids, spec, &selection.split)?;
    }
    if let Some(n) = selection.sample_size {
        ids = sample(ids, n, selection.seed, &selection.split)?;
    }
    let (positions, ids): (Vec<usize>, Vec<String>) = ids.into_iter().unzip();
    let mut questions: HashMap<String, Question> = loaded
        .questions
        .into_iter()
        .map(|q| (q.id.clone(), q))
        .collect();
    let mut bad: HashMap<&str, &BadRecord> = HashMap::new();
    for b in &loaded.bad {
        bad.entry(b.id.as_str()).or_insert(b);
    }
    let mut picked = Selected {
        split_records,
        ..Selected::default()
    };
    for id in &ids {
        match questions.remove(id) {
            Some(q) => picked.questions.push(q),
            None => picked.failed.push(bad.get(id.as_str()).map_or_else(
                || BadRecord::new(id.clone(), "not loaded"),
                |b| (*b).clone(),
            )),
        }
    }
    picked.ids = ids;
    picked.positions = positions;
    picked.split_bad = loaded.bad;
    Ok(picked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_parsing() {
        assert_eq!(
            "3_7".parse::<Partition>().ok(),
            Some(Partition { start: 3, end: 7 })
        );
        assert_eq!(
            " 0_0 ".parse::<Partition>().ok(),
            Some(Partition { start: 0, end: 0 })
        );
        for bad in ["", "3", "3-7", "a_b", "7_3", "-1_4", "+1_4", "1_2_3", "_5"] {
            let err = partition(Vec::<String>::new(), bad, "val").err();
            assert!(
                matches!(err, Some(DatasetError::BadPartition { .. })),
                "{bad} accepted"
            );
        }
    }
}
