//! Prometheus metrics of one ingester. Labels come from a closed set (partition numbers), never
//! from user data or error text.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric the ingester exports, registered in `registry`.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Records read from Kafka.
    pub records_consumed: IntCounter,
    /// Payload bytes read from Kafka.
    pub bytes_consumed: IntCounter,
    /// Records skipped because the table already holds them (after a seek or restart).
    pub records_already_committed: IntCounter,
    /// Records that could not be decoded.
    pub decode_errors: IntCounter,
    /// Bad records by what became of them: skipped (counted once the commit past them lands),
    /// stopped (their partition stopped at them).
    pub bad_records: IntCounterVec,
    /// Rows per table commit.
    pub batch_rows: Histogram,
    /// Arrow bytes per table commit.
    pub batch_bytes: Histogram,
    /// Time to write files and commit them.
    pub commit_seconds: Histogram,
    /// Table commits, and commit attempts that failed or lost to another writer.
    pub commits: IntCounter,
    pub commit_failures: IntCounter,
    pub table_retries: IntCounter,
    pub commit_conflicts: IntCounter,
    /// Rows committed.
    pub rows_committed: IntCounter,
    /// Per partition: the next offset committed in the table, and the lag behind the high
    /// watermark.
    pub committed_offset: IntGaugeVec,
    pub partition_lag: IntGaugeVec,
    /// Bytes buffered for the next commit (payloads and Arrow), now and at most so far.
    pub buffered_bytes: IntGauge,
    pub buffered_bytes_peak: IntGauge,
    /// Partitions assigned to this member.
    pub assigned_partitions: IntGauge,
    /// Rebalance events (assign and revoke).
    pub rebalances: IntCounter,
    /// Errors reported by the Kafka client.
    pub kafka_errors: IntCounter,
    /// 1 while the Kafka client has a broker connection up.
    pub broker_up: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("kafkatable".into()), None)?;
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> Result<Histogram, prometheus::Error> {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let partition_gauge = |name: &str, help: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), &["partition"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let assigned = gauge(
            "assigned_partitions",
            "Partitions assigned to this ingester",
        )?;
        let buffered_bytes = gauge("buffered_bytes", "Bytes buffered for the next commit")?;
        let buffered_bytes_peak = gauge(
            "buffered_bytes_peak",
            "Most bytes buffered for one commit so far",
        )?;
        Ok(Self {
            records_consumed: counter("records_consumed_total", "Records read from Kafka")?,
            bytes_consumed: counter("bytes_consumed_total", "Payload bytes read from Kafka")?,
            records_already_committed: counter(
                "records_already_committed_total",
                "Records skipped because the table already holds them",
            )?,
            decode_errors: counter(
                "decode_errors_total",
                "Bad records met (one read again after a rewind counts again)",
            )?,
            bad_records: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "bad_records_total",
                        "Bad records by what became of them: skipped (once the commit past them landed), stopped (their partition stopped at them)",
                    ),
                    &["action"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            batch_rows: histogram(
                "batch_rows",
                "Rows per table commit",
                prometheus::exponential_buckets(100.0, 4.0, 9)?,
            )?,
            batch_bytes: histogram(
                "batch_bytes",
                "Arrow bytes per table commit",
                prometheus::exponential_buckets(65_536.0, 4.0, 9)?,
            )?,
            commit_seconds: histogram(
                "commit_duration_seconds",
                "Time to write files and commit them to the table",
                prometheus::exponential_buckets(0.01, 2.0, 12)?,
            )?,
            commits: counter("commits_total", "Table commits")?,
            commit_failures: counter("commit_failures_total", "Table commits that failed")?,
            table_retries: counter(
                "table_retries_total",
                "Pauses of consumption after a failed table operation (a commit, or reading the sync points), each followed by a retry",
            )?,
            commit_conflicts: counter(
                "commit_conflicts_total",
                "Table commits refused because another writer committed the same partitions",
            )?,
            rows_committed: counter("rows_committed_total", "Rows committed to the table")?,
            committed_offset: partition_gauge(
                "committed_offset",
                "Next offset committed in the table",
            )?,
            partition_lag: partition_gauge(
                "partition_lag",
                "High watermark minus the table's next offset",
            )?,
            assigned_partitions: assigned,
            buffered_bytes,
            buffered_bytes_peak,
            rebalances: counter("rebalances_total", "Assignments and revocations")?,
            kafka_errors: counter("kafka_errors_total", "Errors reported by the Kafka client")?,
            broker_up: gauge(
                "broker_up",
                "1 while the Kafka client has a broker connection up",
            )?,
            registry,
        })
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}
