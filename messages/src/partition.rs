//! `data_partition: 'a_b'`, shared by the config validator and the dataset selector.
use serde::{Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// `data_partition: 'a_b'`: questions `a` through `b`, both included, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition {
    pub start: usize,
    /// Inclusive.
    pub end: usize,
}

impl Partition {
    /// Number of questions in the range (0 only for a hand-built `start > end`).
    pub fn len(&self) -> usize {
        self.end
            .checked_sub(self.start)
            .map_or(0, |d| d.saturating_add(1))
    }

    /// True only for a hand-built `start > end`; parsed partitions hold at least one.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn range(&self) -> std::ops::RangeInclusive<usize> {
        self.start..=self.end
    }
}

impl FromStr for Partition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("must be 'a_b' with 0 <= a <= b, both included (got '{s}')");
        let (a, b) = s.trim().split_once('_').ok_or_else(bad)?;
        // `parse` alone would accept a leading `+`; a partition is plain digits.
        let number = |n: &str| {
            let n = n.trim();
            if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            n.parse::<usize>().map_err(|_| bad())
        };
        let (start, end) = (number(a)?, number(b)?);
        if start > end {
            return Err(format!(
                "start must not exceed end in 'a_b' (got '{s}': {start} > {end})"
            ));
        }
        Ok(Partition { start, end })
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.start, self.end)
    }
}

impl Serialize for Partition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
