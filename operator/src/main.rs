//! `kafkatable-operator`: reads its settings, waits for leadership, runs the controller.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kafkatable_operator::leader::Elector;
use kafkatable_operator::metrics::{self, Metrics};
use kafkatable_operator::reconcile::{self, Settings};
use kafkatable_operator::render::IngesterDefaults;
use kube::Api;

/// Reconciles KafkaTable resources into right-sized ingester Deployments.
#[derive(Debug, Parser)]
#[command(name = "kafkatable-operator", version)]
struct Args {
    /// Address of /metrics and /healthz.
    #[arg(
        long,
        env = "KAFKATABLE_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,
    /// Watch KafkaTables in this namespace only (default: all namespaces).
    #[arg(long, env = "KAFKATABLE_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Ingester image for tables that name none.
    #[arg(long, env = "KAFKATABLE_INGESTER_IMAGE", default_value_t = IngesterDefaults::default().image)]
    ingester_image: String,
    /// The ingester's command in its image; empty runs the image's entrypoint.
    #[arg(long, env = "KAFKATABLE_INGESTER_COMMAND", default_value = "")]
    ingester_command: String,
    /// Seconds an ingester gets to commit what it holds when stopped.
    #[arg(long, default_value_t = 60)]
    ingester_grace_seconds: i64,
    /// KafkaTables reconciled at once.
    #[arg(long, env = "KAFKATABLE_CONCURRENCY", default_value_t = 8)]
    concurrency: u16,
    /// Seconds between status refreshes of a table.
    #[arg(long, env = "KAFKATABLE_STATUS_INTERVAL", default_value_t = 10)]
    status_interval_seconds: u64,
    /// Run leader election on this Lease (in --lease-namespace); off when empty.
    #[arg(
        long,
        env = "KAFKATABLE_LEASE_NAME",
        default_value = "kafkatable-operator"
    )]
    lease_name: String,
    /// Namespace of the leader Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME", default_value = "kafkatable-operator")]
    identity: String,
}

#[tokio::main]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rdkafka=warn".into());
    if std::env::var("KAFKATABLE_LOG_FORMAT").as_deref() == Ok("json") {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        // Colours only on a terminal: pod logs stay plain text.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init();
    }
    if let Err(e) = run(Args::parse()).await {
        tracing::error!(error = %e, "operator stopped");
        eprintln!("kafkatable-operator: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default().await?;
    reconcile::check_crd(&client, args.namespace.as_deref()).await?;
    let metrics = Metrics::new()?;
    let server = tokio::spawn(metrics::serve(args.http_addr, metrics.clone()));

    let elector = (!args.lease_name.is_empty()).then(|| {
        Elector::new(
            Api::<Lease>::namespaced(client.clone(), &args.lease_namespace),
            &args.lease_name,
            &args.identity,
            Duration::from_secs(args.lease_seconds.max(3)),
        )
    });
    if let Some(elector) = &elector {
        elector.acquire().await?;
    }
    let settings = Settings {
        ingester: IngesterDefaults {
            image: args.ingester_image,
            command: args.ingester_command,
            termination_grace_seconds: args.ingester_grace_seconds,
        },
        status_interval: Duration::from_secs(args.status_interval_seconds.max(1)),
        namespace: args.namespace,
        concurrency: args.concurrency.max(1),
    };
    let controller = reconcile::run(client, metrics, settings, &args.identity);
    match &elector {
        Some(elector) => {
            tokio::select! {
                () = controller => {}
                lost = elector.keep() => return Err(lost.into()),
            }
        }
        None => controller.await,
    }
    server.abort();
    tracing::info!("stopped");
    Ok(())
}
