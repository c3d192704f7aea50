//! Commands that need no services: config and dataset checks, the synthetic
//! benchmark, offline labelling.
use crate::cli::{ConfigCommand, DataCommand, LabelArgs};
use anyhow::{bail, Result};
use tsst_datasets::synth::{self, SynthOptions};

pub fn config(command: ConfigCommand) -> Result<()> {
    let ConfigCommand::Check { files } = command;
    let mut bad = 0;
    for file in &files {
        match tsst_config::check_file_with_warnings(file) {
            Ok((kind, warnings)) => {
                println!("ok    {} ({kind:?})", file.display());
                for w in warnings {
                    println!("      warning: {w}");
                }
            }
            Err(e) => {
                bad += 1;
                println!("error {e}");
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} config files are invalid", files.len());
    }
    Ok(())
}

pub fn data(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Check {
            source,
            root,
            split,
        } => {
            let report = tsst_datasets::check(source, &root, split.as_deref())?;
            print!("{report}");
            Ok(())
        }
        DataCommand::Synth(args) => {
            let summary = synth::generate(&SynthOptions {
                out: args.out,
                n: args.n,
                seed: args.seed,
                difficulty: args.difficulty,
                splits: args.splits,
                ..SynthOptions::default()
            })?;
            print!("{summary}");
            Ok(())
        }
    }
}

pub fn label(args: LabelArgs) -> Result<()> {
    let mut offline = tsst_labels::OfflineArgs::new(args.input, args.value_out, args.policy_out);
    offline.k = args.k;
    offline.image_root = args.image_root;
    offline.jsonl = args.jsonl;
    let report = tsst_labels::run_offline(&offline)?;
    print!("{report}");
    Ok(())
}
