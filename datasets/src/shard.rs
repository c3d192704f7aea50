//! Deterministic sharding of questions by a stable hash of the id
//! (`tsst_messages::stable_hash`, not `std`'s hasher, whose algorithm may change
//! between Rust releases): a question lands in the same shard on every machine and
//! after every upgrade.
use std::num::NonZeroUsize;
use tsst_messages::{stable_hash, Question};

/// The shard (`0..n`) that question `id` belongs to.
pub fn shard_of(id: &str, n: NonZeroUsize) -> usize {
    (stable_hash(&[id.as_bytes()]) % n.get() as u64) as usize
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
    fn shard_of_is_in_range() {
        let n = NonZeroUsize::MIN.saturating_add(6);
        for i in 0..100 {
            assert!(shard_of(&format!("q{i}"), n) < 7);
        }
    }
}
