//! Which questions of a loaded split a run uses: dataset order, `data_partition`,
//! `sample_size`, all reproducible from the seed.
use crate::report::DatasetError;
use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use tsst_messages::{DataSource, Partition, Question};

pub use crate::shard::{shard, shard_of};

/// What to take from a split. `partition` is applied first (to the dataset order),
/// then `sample_size` draws from what the partition left.
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

/// Questions `a` through `b` inclusive of `questions`; `split` only names the split
/// in the error.
pub fn partition(
    questions: Vec<Question>,
    spec: &str,
    split: &str,
) -> Result<Vec<Question>, DatasetError> {
    let p: Partition = spec.parse().map_err(|reason| DatasetError::BadPartition {
        spec: spec.to_string(),
        reason,
    })?;
    if p.end >= questions.len() {
        return Err(DatasetError::PartitionPastEnd {
            spec: spec.trim().to_string(),
            split: split.to_string(),
            len: questions.len(),
        });
    }
    Ok(questions.into_iter().skip(p.start).take(p.len()).collect())
}

/// Draws `n` questions without replacement, seeded; the drawn ones keep their order.
pub fn sample(
    questions: Vec<Question>,
    n: usize,
    seed: u64,
    split: &str,
) -> Result<Vec<Question>, DatasetError> {
    if n > questions.len() {
        return Err(DatasetError::SampleTooLarge {
            requested: n,
            available: questions.len(),
            split: split.to_string(),
        });
    }
    // Partial Fisher-Yates over the indices: the first n slots are a uniform draw.
    let mut indices: Vec<usize> = (0..questions.len()).collect();
    let mut rng = SplitMix64::new(seed);
    for i in 0..n {
        let j = i + rng.below((indices.len() - i) as u64) as usize;
        indices.swap(i, j);
    }
    let mut keep = vec![false; questions.len()];
    for &i in &indices[..n] {
        keep[i] = true;
    }
    Ok(questions
        .into_iter()
        .zip(keep)
        .filter_map(|(q, k)| k.then_some(q))
        .collect())
}

/// VCR's dataset order: ids sorted (byte order, as Python's `sorted` on str), then
/// shuffled with `seed`.
pub fn vcr_order(questions: &mut [Question], seed: u64) {
    questions.sort_by(|a, b| a.id.cmp(&b.id));
    SplitMix64::new(seed).shuffle(questions);
}

/// Puts loaded questions (file order) into the order `data_partition` indexes:
/// VCR is sorted and shuffled; A-OKVQA and ScienceQA keep file order.
pub fn dataset_order(source: DataSource, questions: &mut [Question], seed: u64) {
    if source == DataSource::Vcr {
        vcr_order(questions, seed);
    }
}

/// Applies dataset order, then the partition, then the sample.
pub fn select(
    source: DataSource,
    mut questions: Vec<Question>,
    selection: &Selection,
) -> Result<Vec<Question>, DatasetError> {
    dataset_order(source, &mut questions, selection.seed);
    if let Some(spec) = &selection.partition {
        questions = partition(questions, spec, &selection.split)?;
    }
    if let Some(n) = selection.sample_size {
        questions = sample(questions, n, selection.seed, &selection.split)?;
    }
    Ok(questions)
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
            let err = partition(Vec::new(), bad, "val").err();
            assert!(
                matches!(err, Some(DatasetError::BadPartition { .. })),
                "{bad} accepted"
            );
        }
    }
}
