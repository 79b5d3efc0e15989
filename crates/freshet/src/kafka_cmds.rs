//! `freshet topics apply|check` and `freshet produce`: the Kafka commands.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use freshet_kafka::client::CONNECT_TIMEOUT;
use freshet_kafka::produce::produce_lines;
use freshet_kafka::topics::load_dir;
use freshet_kafka::{KafkaProducer, TopicAdmin};

/// Default directory of the topic files.
const DEFAULT_TOPICS_DIR: &str = "topics";

/// `freshet topics ...`.
#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create the topics of the files that are missing and raise partition counts.
    Apply(TopicsArgs),
    /// Report how the brokers differ from the topic files (exit status 1 when they do).
    Check(TopicsArgs),
}

/// Arguments of `freshet topics apply|check`.
#[derive(Args)]
pub struct TopicsArgs {
    /// Directory of topic files (`*.toml`).
    #[arg(long, default_value = DEFAULT_TOPICS_DIR)]
    dir: PathBuf,
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[arg(long)]
    brokers: String,
}

/// Arguments of `freshet produce`.
#[derive(Args)]
pub struct ProduceArgs {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[arg(long)]
    brokers: String,
    /// Topic to produce to.
    #[arg(long)]
    topic: String,
    /// JSON-lines file, one event per line.
    file: PathBuf,
    /// At most this many events per second (`N` or `N/s`); unbounded by default.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Event field used as the message key (default: `key_field` of the topic's file).
    #[arg(long)]
    key_field: Option<String>,
    /// Directory of topic files, for the default key field.
    #[arg(long, default_value = DEFAULT_TOPICS_DIR)]
    topics_dir: PathBuf,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let number = s.strip_suffix("/s").unwrap_or(s);
    match number.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!("`{s}`: expected a positive rate such as `1000/s`")),
    }
}

/// Runs `freshet topics apply|check`.
pub fn topics(command: &TopicsCommand) -> anyhow::Result<()> {
    let (args, apply) = match command {
        TopicsCommand::Apply(args) => (args, true),
        TopicsCommand::Check(args) => (args, false),
    };
    let files = load_dir(&args.dir)?;
    if files.is_empty() {
        bail!("{}: no topic files (*.toml)", args.dir.display());
    }
    let admin = TopicAdmin::connect(&args.brokers, CONNECT_TIMEOUT)?;
    if apply {
        for action in admin.apply(&files)? {
            println!("{action}");
        }
    }
    let mut differing = 0;
    for (topic, diffs) in admin.check(&files)? {
        if diffs.is_empty() {
            println!("{topic}: ok");
        }
        for diff in &diffs {
            println!("{topic}: {diff}");
        }
        differing += usize::from(!diffs.is_empty());
    }
    if differing > 0 {
        let hint = if apply {
            " (apply creates topics and raises partitions; it does not lower partitions, change replication or alter configs)"
        } else {
            ""
        };
        bail!(
            "{differing} topic(s) differ from {}{hint}",
            args.dir.display()
        );
    }
    Ok(())
}

fn default_key_field(dir: &Path, topic: &str) -> Option<String> {
    let files = load_dir(dir).ok()?;
    files.into_iter().find(|f| f.name == topic)?.key_field
}

/// Runs `freshet produce`.
pub fn produce(args: &ProduceArgs) -> anyhow::Result<()> {
    let key_field = args
        .key_field
        .clone()
        .or_else(|| default_key_field(&args.topics_dir, &args.topic));
    let file = File::open(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let producer = KafkaProducer::connect(&args.brokers, CONNECT_TIMEOUT)?;
    producer.partition_count(&args.topic)?;
    if key_field.is_none() {
        eprintln!(
            "warning: no key field (no --key-field and no key_field in {}/): messages are unkeyed",
            args.topics_dir.display()
        );
    }
    let stats = produce_lines(
        &producer,
        &args.topic,
        BufReader::with_capacity(1 << 20, file),
        key_field.as_deref(),
        args.rate,
    )?;
    println!(
        "produced {} events to {} in {:.2}s ({:.0} events/s){}",
        stats.records,
        args.topic,
        stats.elapsed.as_secs_f64(),
        stats.rate(),
        if stats.unkeyed > 0 {
            format!(", {} without a key", stats.unkeyed)
        } else {
            String::new()
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates_are_numbers_per_second() {
        assert_eq!(parse_rate("1000/s"), Ok(1000.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
