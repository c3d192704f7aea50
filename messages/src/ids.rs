//! Deterministic identifiers: the same run, question and position in the tree always
//! give the same id, which is what makes redelivered work idempotent.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// FNV-1a over length-prefixed parts: stable across builds, platforms and versions
/// (unlike `std`'s hasher), and no two part lists collide by concatenation.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for part in parts {
        feed(&(part.len() as u64).to_le_bytes());
        feed(part);
    }
    // FNV's low bits mix poorly; a final avalanche makes the id usable as a seed and
    // for sharding modulo small numbers.
    splitmix64(h)
}

/// One step of SplitMix64: a bijective mix of a 64-bit value.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A node of a question's search tree. Serialised as 16 hex digits so that tools in
/// languages without 64-bit integers read it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The root of a question's tree (the prompt, no steps yet).
    pub fn root(run: &str, question: &str) -> NodeId {
        NodeId(stable_hash(&[b"root", run.as_bytes(), question.as_bytes()]))
    }

    /// The `sample`-th child generated from `parent` in `round`.
    pub fn child(run: &str, question: &str, parent: NodeId, round: u32, sample: u32) -> NodeId {
        NodeId(stable_hash(&[
            b"child",
            run.as_bytes(),
            question.as_bytes(),
            &parent.0.to_le_bytes(),
            &round.to_le_bytes(),
            &sample.to_le_bytes(),
        ]))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(format!("node id `{s}` is not 16 hex digits"));
        }
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| format!("node id `{s}` is not 16 hex digits"))
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Checks a run id: it appears in queue payloads, Redis keys and file names, so it is
/// kept to characters that need no escaping anywhere.
pub fn validate_run_id(run: &str) -> Result<(), String> {
    let ok = !run.is_empty()
        && run.len() <= 64
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "run id `{run}` must be 1-64 characters of letters, digits, '-', '_' or '.'"
        ))
    }
}
