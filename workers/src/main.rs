//! `tsst`: Tree-Searched Self-Training for vision-language models.
mod cli;
mod commands;
mod metrics;
mod runs;
mod services;
mod snapshot;
mod tree_view;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command};
use commands::{autoscale, cluster, dlq, local, monitor, run, selftrain, train, worker};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let services = cli.services;
    // Actors need an actix system; lapin and the model threads want a multi-threaded
    // runtime under it, so the event loop never starves.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    actix_rt::System::with_tokio_rt(|| runtime).block_on(async move {
        match cli.command {
            Command::Config { command } => local::config(command),
            Command::Data { command } => local::data(command),
            Command::Label(args) => local::label(args),
            Command::Warmup(args) => local::warmup(args).await,
            Command::Enqueue(args) => cluster::enqueue(args, &services).await,
            Command::Worker(args) => worker::worker(args, &services).await,
            Command::Autoscale(args) => autoscale::autoscale(args, &services).await,
            Command::Run(args) => run::run(args, &services).await,
            Command::Demo(args) => run::demo(args, &services).await,
            Command::Results(args) => cluster::results(args, &services).await,
            Command::Status(args) => cluster::status(args, &services).await,
            Command::Tree {
                command: cli::TreeCommand::Show(args),
            } => cluster::tree_show(args, &services).await,
            Command::Monitor(args) => monitor::monitor(args, &services).await,
            Command::Dlq(command) => dlq::dlq(command, &services).await,
            Command::Train(args) => train::train(args, &services).await,
            Command::Models(args) => train::models(args, &services).await,
            Command::Selftrain(args) => selftrain::selftrain(args, &services).await,
            Command::Report(args) => selftrain::report(&args.out),
            Command::Eval(args) => selftrain::eval(args, &services).await,
        }
    })
}
