//! `kafkatable-operator`: the control plane. Wires configuration from the command line and
//! the environment into the controller.

use clap::Parser;

/// Reconciles KafkaTable resources into ingester Deployments, scales them by consumer lag and
/// reports progress in each KafkaTable's status.
#[derive(Debug, Parser)]
#[command(name = "kafkatable-operator", version)]
struct Args {
    /// Address of the /metrics and /healthz endpoint.
    #[arg(long, env = "KAFKATABLE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
}

fn main() {
    let args = Args::parse();
    eprintln!(
        "kafkatable-operator: the controller is not implemented yet (metrics address {})",
        args.metrics_addr
    );
    std::process::exit(2);
}
