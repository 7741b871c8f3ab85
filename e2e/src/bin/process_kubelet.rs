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
    /// Directory of OCI image archives (`make images`): containers run from their image's
    /// root filesystem, as uid and with the mounts their pod says.
    #[arg(long, required_unless_present = "host_binaries")]
    images: Option<PathBuf>,
    /// Where images are unpacked, once per manifest digest.
    #[arg(long, default_value = "/tmp/process-kubelet-images")]
    image_cache: PathBuf,
    /// The inner development loop's fast path, instead of images: run each container's command
    /// as a host process of the binary of that name in this directory.
    #[arg(long, conflicts_with = "images")]
    host_binaries: Option<PathBuf>,
    /// CA certificate of the API server, handed to pods in their kubeconfig.
    #[arg(long)]
    ca_file: PathBuf,
    /// Seconds pods get to stop when the kubelet itself shuts down.
    #[arg(long, default_value_t = 5)]
    shutdown_grace_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(kubelet::RUN_IN_ROOTFS) {
        return run_in_rootfs(argv.get(2));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve())
}

/// `process-kubelet run-in-rootfs <spec.json>`: become one container's process. Errors go to
/// the container's log, and the exit code is what a runtime's start error gives (128).
fn run_in_rootfs(spec: Option<&String>) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<std::convert::Infallible> {
        let path =
            spec.ok_or_else(|| anyhow::anyhow!("usage: process-kubelet run-in-rootfs SPEC"))?;
        let sandbox: kubelet::sandbox::Sandbox = serde_json::from_slice(&std::fs::read(path)?)?;
        Ok(kubelet::sandbox::enter(&sandbox)?)
    })();
    let Err(e) = result;
    eprintln!("{}{e:#}", kubelet::START_ERROR_PREFIX);
    std::process::exit(128);
}

async fn serve() -> anyhow::Result<()> {
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
            runtime: match (args.images, args.host_binaries) {
                (_, Some(bin_dir)) => kubelet::Runtime::HostBinaries { bin_dir },
                (Some(archives), None) => kubelet::Runtime::Images {
                    archives,
                    cache: args.image_cache,
                },
                (None, None) => anyhow::bail!("--images or --host-binaries"),
            },
            server,
            ca_file: args.ca_file,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
        },
    )
    .await?;
    Ok(())
}
