//! Verification rules, tree value labels, run metrics and training-data writers
//! (TSST.md, "Verification", "Value labels for the tree" and "Datasets for the next
//! round").
//!
//! Everything here is pure except [`offline`] and the writers in [`datasets`], which
//! read and write the files named by `tsst label`.
pub mod datasets;
pub mod extract;
pub mod faithful;
pub mod llm_prompt;
pub mod metrics;
pub mod offline;
pub mod prompt;
pub mod rule;
pub mod value_tree;

pub use datasets::{
    policy_records, value_records, warmup_value_records, warmup_values, write_records,
    DatasetError, DatasetOptions, LlavaRecord, OutputFormat, Turn,
};
pub use extract::{extract_answer, has_final_answer, parse_direct_letter};
pub use llm_prompt::{
    llm_messages, llm_messages_for, llm_verdict, parse_llm_reply, ChatMessage, LlmWord,
};
pub use metrics::{RunMetrics, Tally};
pub use offline::{run_offline, BadLine, OfflineArgs, OfflineError, OfflineReport};
pub use prompt::{conversation, task_prompt};
pub use rule::{decide, resolve_choice, rule_verdict, RuleDecision};
pub use value_tree::{assign_value_tree, LabelledNode, TreePath};
