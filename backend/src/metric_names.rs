//! Names of the metrics a model backend records itself. They live here, below both the
//! model runtime (`tsst-models`, which records them) and the actors (which describe
//! and export them), so the two cannot drift apart.

/// Prompt tokens the policy prefilled.
pub const TOKENS_PREFILLED: &str = "tsst_tokens_prefilled_total";
/// Host-side time of a policy decode step on the device, by `phase` (inputs, bind,
/// run, sample): one sample per policy batch, its mean a step.
pub const DECODE_STEP_SECONDS: &str = "tsst_decode_step_seconds";
