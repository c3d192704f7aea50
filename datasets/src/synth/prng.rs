//! The synthetic benchmark's view of the crate's [`SplitMix64`]: usize helpers and
//! independent per-question streams.
use crate::rng::SplitMix64;

/// SplitMix64's finaliser, a bijection: distinct stream keys stay distinct.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
pub(crate) struct Prng(SplitMix64);

impl Prng {
    /// An independent stream per (seed, purpose, index), so that changing `n` or the
    /// split fractions does not reshuffle the randomness of every other question.
    pub(crate) fn derive(seed: u64, stream: u64, index: u64) -> Self {
        Prng(SplitMix64::new(mix(mix(seed ^ mix(stream)) ^ index)))
    }

    /// Uniform in `0..n`; 0 when `n == 0` (callers never index an empty slice with it).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }

    /// Uniform in `lo..=hi`; an inverted range collapses to `lo`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub(crate) fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        self.0.shuffle(items)
    }

    pub(crate) fn choose<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        self.0.choose(items).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let draw = |s, k, i| Prng::derive(s, k, i).0.next_u64();
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 2, 4));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 3));
        assert_ne!(draw(1, 2, 3), draw(2, 2, 3));
    }

    #[test]
    fn range_is_inclusive() {
        let mut r = Prng::derive(0, 0, 0);
        let mut seen = [false; 3];
        for _ in 0..200 {
            seen[r.range(2, 4) - 2] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.range(5, 3), 5);
    }
}
