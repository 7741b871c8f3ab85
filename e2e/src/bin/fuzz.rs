//! `make fuzz`: every decoder target of [`kafkatable_e2e::fuzz`] for a number of executions
//! (1,000,000 each by default), with the figures of each run; a finding ends the run with the
//! input that made it, also written to `$KAFKATABLE_CACHE/fuzz/`.

use std::time::Duration;

use clap::Parser;
use kafkatable_e2e::fuzz::{fuzz, targets};

#[derive(Parser)]
#[command(about = "Fuzzes the ingester's decoders")]
struct Args {
    /// Executions per target.
    #[arg(long, default_value_t = 1_000_000)]
    executions: u64,
    /// Only the targets whose name contains this.
    #[arg(long)]
    target: Option<String>,
    /// The random seed of the mutations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One execution longer than this many seconds is a hang.
    #[arg(long, default_value_t = 10)]
    hang_seconds: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let hang = Duration::from_secs(args.hang_seconds);
    let mut failed = false;
    for target in targets() {
        if args
            .target
            .as_ref()
            .is_some_and(|t| !target.name.contains(t.as_str()))
        {
            continue;
        }
        match fuzz(&target, args.executions, args.seed, hang) {
            Ok(run) => println!(
                "{:<13} {:>9} executions in {:>6.1} s ({:>7.0}/s), {:>8} decoded whole, corpus {}: no crash, no hang",
                target.name,
                run.executions,
                run.seconds,
                run.executions as f64 / run.seconds.max(1e-9),
                run.accepted,
                run.corpus
            ),
            Err(finding) => {
                failed = true;
                eprintln!("FINDING {finding}");
                let dir = std::env::var("KAFKATABLE_CACHE")
                    .map(|c| std::path::PathBuf::from(c).join("fuzz"))
                    .unwrap_or_else(|_| std::env::temp_dir().join("kafkatable-fuzz"));
                let _ = std::fs::create_dir_all(&dir);
                let path = dir.join(format!("{}-seed{}.bin", finding.target, args.seed));
                if std::fs::write(&path, &finding.input).is_ok() {
                    eprintln!("the input is in {}", path.display());
                }
            }
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
