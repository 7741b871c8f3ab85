//! `process-kubelet`: runs the pods bound to one Node as local processes (test harness only).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kafkatable_e2e::kubelet;

/// A test stand-in for the kubelet: registers a Node and runs its pods as local processes.
#[derive(Debug, Parser)]
#[command(name = "process-kubelet")]
struct Args {
    /// Kubeconfig with the kubelet's credentials.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, default_value = "kafkatable-node")]
    node_name: String,
    /// Directory for per-pod files (volumes, logs, HOME).
    #[arg(long)]
    root_dir: PathBuf,
    /// Directory searched first for a container's command (locally built binaries).
    #[arg(long)]
    bin_dir: PathBuf,
    /// CA certificate of the API server, handed to pods in their kubeconfig.
    #[arg(long)]
    ca_file: PathBuf,
    /// Seconds pods get to stop when the kubelet itself shuts down.
    #[arg(long, default_value_t = 5)]
    shutdown_grace_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let args = Args::parse();
    kafkatable_e2e::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let client = kube::Client::try_from(config)?;
    kubelet::run(
        client,
        kubelet::Config {
            node_name: args.node_name,
            root_dir: args.root_dir,
            bin_dir: args.bin_dir,
            server,
            ca_file: args.ca_file,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        },
    )
    .await?;
    Ok(())
}
