//! `kafkatable-ingester`: wires the configuration, the consumer, the committer and the HTTP
//! endpoints together and runs until SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kafkatable_crds::config::DEFAULT_SECRETS_DIR;
use kafkatable_crds::spec::{Format, TableFormat};
use kafkatable_ingester::commit::{Committer, delta::DeltaCommitter, iceberg::IcebergCommitter};
use kafkatable_ingester::coordinator::{Coordinator, Faults};
use kafkatable_ingester::deadletter::table::DeadLetterTable;
use kafkatable_ingester::decode::{
    AvroContext, AvroDecoder, BytesDecoder, Decoder, JsonDecoder, JsonSchemaContext,
    JsonSchemaDecoder, KeyContext, ProtobufContext, ProtobufDecoder, TextDecoder,
};
use kafkatable_ingester::error::IngesterError;
use kafkatable_ingester::http::{self, Health};
use kafkatable_ingester::load;
use kafkatable_ingester::metrics::Metrics;
use kafkatable_ingester::registry::{Registry, Version};
use kafkatable_ingester::sink::TableSink;
use kafkatable_ingester::source::{KafkaSource, read_credentials, read_secret};

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
    /// Measure consume, decode or encode rates on a topic (used by `make bench`).
    #[command(hide = true)]
    BenchDrain {
        #[arg(short = 'f', long)]
        file: PathBuf,
        #[arg(long, value_enum)]
        mode: kafkatable_ingester::bench::Mode,
        #[arg(long)]
        records: u64,
        #[arg(long, env = "KAFKATABLE_SECRETS_DIR", default_value = DEFAULT_SECRETS_DIR)]
        secrets_dir: PathBuf,
    },
    /// Run the ingester from a rendered config file or a KafkaTable manifest.
    Run {
        /// Ingester config (the operator's ConfigMap) or a KafkaTable manifest.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, env = "KAFKATABLE_HTTP_ADDR", default_value = "0.0.0.0:9090")]
        http_addr: std::net::SocketAddr,
        /// Directory holding the referenced Secrets as <secret>/<key> files.
        #[arg(long, env = "KAFKATABLE_SECRETS_DIR", default_value = DEFAULT_SECRETS_DIR)]
        secrets_dir: PathBuf,
        /// Client id towards Kafka (defaults to the pod name).
        #[arg(long, env = "POD_NAME", default_value = "kafkatable-ingester")]
        client_id: String,
    },
}

#[tokio::main]
async fn main() {
    // delta-kernel logs an ERROR whenever it looks for a table that does not exist yet, which is
    // the normal first start; our own errors report real failures.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rdkafka=warn,deltalake=warn,deltalake_core::writer::stats=error,buoyant_kernel=off".into());
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
    let (file, http_addr, secrets_dir, client_id) = match Args::parse().command {
        Command::Run {
            file,
            http_addr,
            secrets_dir,
            client_id,
        } => (file, http_addr, secrets_dir, client_id),
        Command::BenchDrain {
            file,
            mode,
            records,
            secrets_dir,
        } => {
            let report = load::config_file(&file, &secrets_dir)
                .and_then(|config| kafkatable_ingester::bench::drain(&config, mode, records));
            match report {
                Ok(r) => println!("{}", serde_json::to_string(&r).unwrap_or_default()),
                Err(e) => {
                    eprintln!("kafkatable-ingester bench-drain: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
    };
    if let Err(e) = run(file, http_addr, secrets_dir, client_id).await {
        tracing::error!(error = %e, kind = e.kind().as_str(), retryable = e.is_retryable(), "ingester stopped");
        eprintln!("kafkatable-ingester: {e}");
        std::process::exit(1);
    }
}

async fn run(
    file: PathBuf,
    http_addr: std::net::SocketAddr,
    secrets_dir: PathBuf,
    client_id: String,
) -> Result<(), IngesterError> {
    // deltalake's AWS SDK enables rustls' aws-lc-rs provider and kube ring; choose one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    deltalake::aws::register_handlers(None);

    let config = load::config_file(&file, &secrets_dir)?;
    tracing::info!(table = %config.table_id, topic = %config.source.topic, group = %config.source.group_id, "starting");
    let metrics =
        Metrics::new().map_err(|e| IngesterError::Unsupported(format!("metrics: {e}")))?;
    let health = Arc::new(Health::default());
    health.set_rate_window(std::time::Duration::from_millis(
        config.errors.rate_window_ms,
    ));
    let server = tokio::spawn(http::serve(http_addr, metrics.clone(), health.clone()));

    // The table or catalog may be unreachable for a while: report why at /status and retry,
    // instead of crash-looping with the reason only in the log.
    let mut backoff = std::time::Duration::from_secs(1);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let (committer, dead_letter_table) = loop {
        let opened = async {
            let main = open_committer(&config, &config.table).await?;
            Ok::<_, IngesterError>((main, open_dead_letter_table(&config).await?))
        };
        match opened.await {
            Ok(opened) => break opened,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot open the table");
                health.table(Some(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut shutdown => return Ok(()),
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    };
    health.table(None);
    let registry = open_registry(&config, &health)?;
    // One coordinator per payload format, each with its decoder statically dispatched.
    let ingest = Ingest {
        config: &config,
        committer,
        dead_letter_table,
        metrics,
        health: health.clone(),
        client_id: &client_id,
        registry: registry.clone(),
    };
    let keys = KeyContext::new(config.source.key_format, registry.clone());
    let result = match config.source.format {
        Format::Json => ingest.run::<JsonDecoder>((), keys, shutdown).await,
        Format::String => ingest.run::<TextDecoder>((), keys, shutdown).await,
        Format::Bytes => ingest.run::<BytesDecoder>((), keys, shutdown).await,
        Format::Avro => {
            let context = match given_schema(&config)? {
                Some((avro, _)) => AvroContext::given(&avro).map_err(IngesterError::GivenSchema)?,
                None => AvroContext::new(registry),
            };
            ingest.run::<AvroDecoder>(context, keys, shutdown).await
        }
        Format::JsonSchema => {
            let context = JsonSchemaContext::new(registry);
            ingest
                .run::<JsonSchemaDecoder>(context, keys, shutdown)
                .await
        }
        Format::Protobuf => {
            let context = match given_schema(&config)? {
                Some((proto, message)) => ProtobufContext::given(&proto, message.as_deref())
                    .map_err(IngesterError::GivenSchema)?,
                None => ProtobufContext::new(registry),
            };
            ingest.run::<ProtobufDecoder>(context, keys, shutdown).await
        }
    };
    server.abort();
    result
}

/// What the coordinator of any payload format is made of.
struct Ingest<'a> {
    config: &'a kafkatable_crds::IngesterConfig,
    registry: Option<Arc<Registry>>,
    committer: Committer,
    dead_letter_table: Option<DeadLetterTable>,
    metrics: Metrics,
    health: Arc<Health>,
    client_id: &'a str,
}

impl Ingest<'_> {
    /// Consumes the topic into the table with `D`'s decoders (sharing `context`) and keys
    /// decoded as `keys` says until `shutdown`.
    async fn run<D: Decoder>(
        self,
        context: D::Context,
        keys: KeyContext,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), IngesterError> {
        let Self {
            config,
            registry,
            committer,
            dead_letter_table,
            metrics,
            health,
            client_id,
        } = self;
        let mut sink = TableSink::<D>::new(config, committer, metrics.clone(), context, keys)?;
        if !sink.has_columns() {
            let subject = subject_schema::<D>(config, registry.as_deref(), sink.context()).await?;
            sink = sink.with_subject_schema(subject);
        }
        let (mut source, events) =
            KafkaSource::subscribe(&config.source, client_id, metrics.clone(), health.clone())?;
        if let Some(topic) = &config.errors.dead_letter_topic {
            source =
                source.with_dead_letters(topic, &config.table_id, &config.source, client_id)?;
        }
        let chance = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        let faults = Faults {
            crash_after_table_commit: chance("KAFKATABLE_FAULT_CRASH_AFTER_TABLE_COMMIT"),
            crash_after_dead_letters: chance("KAFKATABLE_FAULT_CRASH_AFTER_DEAD_LETTERS"),
        };
        let mut coordinator = Coordinator::new(
            source,
            events,
            sink,
            config.source.start,
            config.commit.clone(),
            metrics,
            health,
        )
        .with_faults(faults)
        .with_exit_after(config.errors.commit_failures_exit);
        if let Some(table) = dead_letter_table {
            coordinator = coordinator.with_dead_letter_table(table);
        }
        coordinator.run(shutdown).await
    }
}

/// The configured schema registry's client, with its credentials read; while it is being
/// waited for, the reason shows at `/status`.
fn open_registry(
    config: &kafkatable_crds::IngesterConfig,
    health: &Arc<Health>,
) -> Result<Option<Arc<Registry>>, IngesterError> {
    let Some(registry) = &config.source.schema_registry else {
        return Ok(None);
    };
    let auth = registry
        .basic_auth
        .as_ref()
        .map(read_credentials)
        .transpose()?;
    // PEM files: the CA, and the client certificate with its key as one.
    let tls = registry.tls.as_ref();
    let ca = tls
        .and_then(|t| t.ca_file.as_deref())
        .map(read_secret)
        .transpose()?;
    let identity = match tls.map(|t| (&t.cert_file, &t.key_file)) {
        Some((Some(cert), Some(key))) => {
            Some(format!("{}\n{}", read_secret(cert)?, read_secret(key)?))
        }
        _ => None,
    };
    let client = Registry::new(
        &registry.url,
        auth,
        ca.as_deref().map(str::as_bytes),
        identity.as_deref().map(str::as_bytes),
    )
    .map_err(|e| IngesterError::Unsupported(e.to_string()))?;
    let client = Arc::new(client);
    let (watched, health) = (Arc::downgrade(&client), health.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            every.tick().await;
            let Some(client) = watched.upgrade() else {
                return;
            };
            health.registry(client.unreachable());
        }
    });
    Ok(Some(client))
}

/// The columns of the registry subject version `schemaRegistry.tableSchema` names, read as the
/// ingester starts (while the registry is unreachable it waits, and /status says why).
async fn subject_schema<D: Decoder>(
    config: &kafkatable_crds::IngesterConfig,
    registry: Option<&Registry>,
    context: &D::Context,
) -> Result<Option<arrow::datatypes::Schema>, IngesterError> {
    let (Some(registry), Some(wanted)) = (
        registry,
        config
            .source
            .schema_registry
            .as_ref()
            .and_then(|r| r.table_schema.as_ref()),
    ) else {
        return Ok(None);
    };
    let version = wanted.version.map_or(Version::Latest, Version::Number);
    let failed = |e: String| {
        IngesterError::Unsupported(format!(
            "spec.source.schemaRegistry.tableSchema: subject {} version {}: {e}",
            wanted.subject,
            wanted.version.map_or("latest".into(), |v| v.to_string())
        ))
    };
    let (id, schema) = registry
        .subject_version(&wanted.subject, version)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let columns = D::registered(context, id, &schema, wanted.record.as_deref()).map_err(failed)?;
    if let Some(columns) = &columns {
        tracing::info!(subject = %wanted.subject, id, schema = %columns, "the table's columns come from the registry");
    }
    Ok(columns)
}

/// The value schema given with the KafkaTable (its text, from the spec or a mounted ConfigMap
/// key) and the Protobuf message type it names, if any.
fn given_schema(
    config: &kafkatable_crds::IngesterConfig,
) -> Result<Option<(String, Option<String>)>, IngesterError> {
    let Some(given) = &config.source.value_schema else {
        return Ok(None);
    };
    let text = match (&given.text, &given.file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|source| IngesterError::ReadConfig {
                path: path.clone(),
                source,
            })?
        }
        (None, None) => return Err(IngesterError::GivenSchema("neither text nor a file".into())),
    };
    Ok(Some((text, given.message.clone())))
}

/// The dead-letter table (`errors.deadLetter.table`): the main table's settings, without its
/// columns and partitioning, in the dead-letter table's place.
async fn open_dead_letter_table(
    config: &kafkatable_crds::IngesterConfig,
) -> Result<Option<DeadLetterTable>, IngesterError> {
    let Some(place) = &config.errors.dead_letter_table else {
        return Ok(None);
    };
    let mut table = config.table.clone();
    table.location = place.location.clone();
    if let (Some(catalog), Some(name)) = (&mut table.catalog, &place.name) {
        catalog.table = name.clone();
    }
    table.partition_by.clear();
    table.event_time = None;
    table.columns.clear();
    let committer = open_committer(config, &table).await?;
    tracing::info!(table = %committer.name(), "bad records go to the dead-letter table");
    Ok(Some(DeadLetterTable::new(
        committer,
        &config.source.topic,
        &config.table_id,
    )))
}

/// The committer of `table` (the configured table, or the dead-letter table) in its format.
async fn open_committer(
    config: &kafkatable_crds::IngesterConfig,
    table: &kafkatable_crds::config::TableConfig,
) -> Result<Committer, IngesterError> {
    Ok(match table.format {
        TableFormat::Delta => {
            let location = table.location.clone().ok_or(IngesterError::Unsupported(
                "a delta table needs spec.table.location".into(),
            ))?;
            let options = load::storage_options(&table.storage)?;
            let partitions = kafkatable_ingester::partition::column_names(table);
            Committer::Delta(
                DeltaCommitter::open(
                    &location,
                    options,
                    &config.source.topic,
                    partitions,
                    config.commit.target_file_size,
                    config.maintenance.checkpoint_interval,
                )
                .await?,
            )
        }
        TableFormat::Iceberg => {
            let catalog = table.catalog.clone().ok_or(IngesterError::Unsupported(
                "an iceberg table needs spec.table.catalog".into(),
            ))?;
            let committer = IcebergCommitter::open(
                &catalog,
                &table.storage,
                &config.source.topic,
                config.commit.target_file_size,
                table.partition_by.clone(),
            )
            .await?;
            Committer::Iceberg(committer)
        }
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the ingester");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
