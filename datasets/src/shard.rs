//! Deterministic sharding of questions over workers by a stable hash of the id.
//!
//! FNV-1a is implemented here rather than taken from `std`'s `DefaultHasher`, whose
//! algorithm may change between Rust releases: a question must land in the same shard
//! on every machine and after every upgrade.
use std::num::NonZeroUsize;
use tsst_messages::Question;

const FNV_OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The shard (`0..n`) that question `id` belongs to.
pub fn shard_of(id: &str, n: NonZeroUsize) -> usize {
    (fnv1a64(id.as_bytes()) % n.get() as u64) as usize
}

/// Splits questions into `n` shards; each shard keeps the input order.
pub fn shard(questions: Vec<Question>, n: NonZeroUsize) -> Vec<Vec<Question>> {
    let mut shards: Vec<Vec<Question>> = (0..n.get()).map(|_| Vec::new()).collect();
    for q in questions {
        let i = shard_of(&q.id, n);
        if let Some(s) = shards.get_mut(i) {
            s.push(q);
        }
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xAF63_DC4C_8601_EC8C);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_F739_67E8);
    }

    #[test]
    fn shard_of_is_in_range() {
        let n = NonZeroUsize::MIN.saturating_add(6);
        for i in 0..100 {
            assert!(shard_of(&format!("q{i}"), n) < 7);
        }
    }
}
