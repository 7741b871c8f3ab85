//! `kafkatable-ingester`: the data plane. Wires configuration from the command line and the
//! environment into the consumer, the decoders and the table committers.

use clap::{Parser, Subcommand};

/// Consumes a Kafka topic into a Delta Lake or Apache Iceberg table, committing the Kafka
/// offsets inside each table commit.
#[derive(Debug, Parser)]
#[command(name = "kafkatable-ingester", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the ingester from a rendered config file or a KafkaTable manifest.
    Run {
        /// Path of the ingester config (from the operator's ConfigMap) or a KafkaTable manifest.
        #[arg(short = 'f', long)]
        file: std::path::PathBuf,
    },
}

fn main() {
    let args = Args::parse();
    match args.command {
        Command::Run { file } => {
            eprintln!(
                "kafkatable-ingester: ingestion is not implemented yet (config {})",
                file.display()
            );
            std::process::exit(2);
        }
    }
}
