//! The `freshet` binary: validate pipelines, replay files through the dataflow, run the service
//! on Kafka (`run`), run the demo, and query a running instance.

mod demo;
mod drift;
mod kafka_cmds;
mod learn;
mod live;
mod model_drift;
mod output;
mod replay;
mod run;
mod serving;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The dataflow allocates many small, short-lived objects (decoded events, panes, store
// vectors); mimalloc's thread-local free lists serve them far faster than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// freshet: windowed features, an online store and serving in one binary.
#[derive(Parser)]
#[command(name = "freshet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a pipeline file without running it.
    Check {
        /// The pipeline file.
        #[arg(long)]
        pipeline: PathBuf,
    },
    /// Read JSON-lines files through the pipeline at full speed and write the results.
    Replay(replay::ReplayArgs),
    /// Run the pipeline as a service: Kafka sources, the online store, the changelog, HTTP.
    Run(run::RunArgs),
    /// Run the pipeline on generated transaction traffic with the embedded store and serve HTTP.
    Demo(demo::DemoArgs),
    /// Create or check the Kafka topics described by the topic files.
    Topics {
        #[command(subcommand)]
        command: kafka_cmds::TopicsCommand,
    },
    /// Load a JSON-lines file into a Kafka topic, keyed by entity.
    Produce(kafka_cmds::ProduceArgs),
    /// Model checkpoints (`freshet models list|show|export`).
    #[command(subcommand)]
    Models(learn::ModelsCommand),
    /// Online-store tools (`freshet store dump`).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Drift monitoring tools (`freshet drift snapshot`).
    #[command(subcommand)]
    Drift(drift::DriftCommand),
    /// Benchmarks (`freshet bench serve`: model serving under local load).
    #[command(subcommand)]
    Bench(serving::BenchCommand),
    /// Ask a running freshet for the features of some entities.
    Query {
        /// Feature view.
        #[arg(long)]
        view: String,
        /// Entity keys.
        #[arg(required = true)]
        entities: Vec<String>,
        /// Address of the running instance.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
}

/// `freshet store ...`.
#[derive(Subcommand)]
enum StoreCommand {
    /// Write every feature vector of the pipeline's store (`[store]`) as JSON lines, in the
    /// format of replay's features.jsonl.
    Dump {
        /// The pipeline file.
        #[arg(long)]
        pipeline: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { pipeline } => check(&pipeline),
        Command::Replay(args) => replay::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Drift(command) => drift::run(&command),
        Command::Models(command) => learn::models(&command),
        Command::Store(StoreCommand::Dump { pipeline, out }) => dump_store(&pipeline, &out),
        Command::Topics { command } => kafka_cmds::topics(&command),
        Command::Produce(args) => kafka_cmds::produce(&args),
        Command::Bench(command) => serving::bench(&command),
        Command::Query {
            view,
            entities,
            addr,
        } => query(&addr, &view, &entities),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let spec = freshet_core::spec::PipelineSpec::load(path)?;
    let features: usize = spec
        .feature_views
        .iter()
        .map(|v| v.get_ref().features.len())
        .sum();
    let drift = if spec.drift.is_empty() {
        String::new()
    } else {
        format!(", {} drift monitors", spec.drift.len())
    };
    println!(
        "{}: ok ({} sources, {} feature views, {} features{drift})",
        path.display(),
        spec.sources.len(),
        spec.feature_views.len(),
        features
    );
    Ok(())
}

fn dump_store(pipeline: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let spec = freshet_core::spec::PipelineSpec::load(pipeline)?;
    let store = freshet_store::open(&spec.store)?;
    for plan in freshet_features::plan::compile(&spec) {
        for view in plan.views {
            store.register_view(view.schema)?;
        }
    }
    let lines = output::dump_features(&*store, out)?;
    eprintln!("{lines} feature vectors written to {}", out.display());
    Ok(())
}

fn query(addr: &str, view: &str, entities: &[String]) -> anyhow::Result<()> {
    let body = freshet_serve::client::get_features(addr, view, entities)?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}
