//! The value-guided sentence-level beam search of TSST.md as pure functions.
mod finish;
mod round;
mod select;

pub use finish::finish_reason;
pub use round::{children, conclude, rebuild, sample_seed, RoundOutcome};
pub use select::{rank_key, score, select};

#[cfg(test)]
pub(crate) mod tests {
    use tsst_messages::SearchSpec;

    pub fn spec() -> SearchSpec {
        SearchSpec {
            seed: 7,
            branch: 2,
            n_consistency: 3,
            tag: "test".into(),
            ..SearchSpec::default()
        }
    }
}
