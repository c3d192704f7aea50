//! The value-guided sentence-level beam search of TSST.md as pure functions.
mod finish;
mod round;
mod select;

pub use finish::finish_reason;
pub use round::{children, conclude, sample_seed, RoundOutcome};
pub use select::{score, select};

#[cfg(test)]
pub(crate) mod tests {
    use tsst_messages::{SearchMode, SearchSpec, Selection, StepDelimiter};

    pub fn spec() -> SearchSpec {
        SearchSpec {
            mode: SearchMode::Beam,
            seed: 7,
            num_beams: 3,
            first_round_multiplier: 2,
            branch: 2,
            n_consistency: 3,
            temperature: 0.7,
            max_length: 1024,
            step_max_tokens: 256,
            finish_max_chars: 1000,
            max_rounds: 30,
            selection: Selection::Sample,
            selection_temperature: 0.5,
            step_delimiter: StepDelimiter::Period,
            use_value: true,
            policy_model: "scripted".into(),
            value_model: Some("scripted".into()),
            tag: "test".into(),
        }
    }
}
