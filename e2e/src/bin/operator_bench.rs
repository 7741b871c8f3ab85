//! `kafkatable-operator-bench`: the operator's reconcile path with many KafkaTables against the
//! real API server and Kafka broker. It runs the operator binary (release build from
//! `make bench`) as a local process watching a namespace of its own, creates the tables, waits
//! until every one has a status, then measures the steady state over several status intervals:
//! reconcile duration percentiles from the operator's own histogram, and its resident memory.
//!
//! The tables are suspended (no ingester pods: a thousand pods do not fit this machine), so a
//! reconcile still renders and applies the four children, reads the topic's watermarks from
//! Kafka, lists the pods and writes the status, but asks no ingester for a report.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use kafkatable_crds::KafkaTable;
use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{TestNamespace, TestTopic, kube_client};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// KafkaTables to create.
    #[arg(long, default_value_t = 1000)]
    tables: usize,
    /// Seconds of steady state to measure (the status interval is 10 s).
    #[arg(long, default_value_t = 40)]
    steady_seconds: u64,
}

/// Cumulative bucket counts of the reconcile histogram: (upper bound in seconds, count).
fn buckets(metrics: &str) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for line in metrics.lines() {
        let Some(rest) =
            line.strip_prefix("kafkatable_operator_reconcile_duration_seconds_bucket{")
        else {
            continue;
        };
        if !rest.contains("result=\"ok\"") {
            continue;
        }
        let le = rest
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let count = line
            .rsplit(' ')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0.0);
        out.push((bound, count));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The q-quantile of the reconciles between two snapshots, interpolated within its bucket.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> (f64, f64) {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let old = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - old)
        })
        .collect();
    let total = counts.last().map_or(0.0, |(_, n)| *n);
    let target = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, n) in &counts {
        if n >= target {
            if le.is_infinite() {
                return (lower.0, total);
            }
            let share = if n > lower.1 {
                (target - lower.1) / (n - lower.1)
            } else {
                1.0
            };
            return (lower.0 + share * (le - lower.0), total);
        }
        lower = (le, n);
    }
    (f64::NAN, total)
}

fn proc_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn operator_binary() -> std::path::PathBuf {
    if let Ok(bin) = std::env::var("KAFKATABLE_OPERATOR_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .unwrap_or(std::path::Path::new("."))
        .join("kafkatable-operator")
}

struct Operator {
    child: Child,
    addr: String,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn metrics(addr: &str) -> String {
    let url = format!("http://{addr}/metrics");
    match reqwest::get(&url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    kafkatable_e2e::fixtures::install_crd(&client).await?;
    let ns = TestNamespace::create(&env, &client, "bench-op").await?;
    let topic = TestTopic::create(&env, "bench-op", 3).await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("{}.operator.log", ns.name)))?;
    let child = Command::new(operator_binary())
        .args([
            "--namespace",
            &ns.name,
            "--lease-name",
            "",
            "--http-addr",
            &addr,
        ])
        .args(["--status-interval-seconds", "10"])
        .env("KUBECONFIG", &env.kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("KAFKATABLE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()?;
    let pid = child.id();
    let operator = Operator { child, addr };

    let tables: Api<KafkaTable> = Api::namespaced(client.clone(), &ns.name);
    let started = Instant::now();
    let creates = futures::stream::iter(0..args.tables).map(|i| {
        let tables = tables.clone();
        let manifest = json!({
            "apiVersion": "kafkatable.io/v1alpha1", "kind": "KafkaTable",
            "metadata": {"name": format!("t{i:04}"), "namespace": ns.name},
            "spec": {
                "source": {"brokers": env.kafka_bootstrap, "topic": topic.name},
                "table": {"format": "delta", "location": format!("file:///tmp/bench/t{i}")},
                "suspend": true,
            },
        });
        async move {
            let kt: KafkaTable = serde_json::from_value(manifest)?;
            tables.create(&PostParams::default(), &kt).await?;
            anyhow::Ok(())
        }
    });
    let results: Vec<_> = creates.buffer_unordered(16).collect().await;
    for r in results {
        r?;
    }
    let created = started.elapsed();
    // Every table reconciled once: it has a status for its generation.
    loop {
        let list = tables.list(&ListParams::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|t| {
                t.status.as_ref().and_then(|s| s.observed_generation) == t.metadata.generation
            })
            .count();
        if done == args.tables {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "only {done} tables have a status"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled = started.elapsed();
    let burst = buckets(&metrics(&operator.addr).await);
    let rss_burst = proc_kb(pid, "VmRSS:");
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let steady = buckets(&metrics(&operator.addr).await);
    let (p50, n) = quantile(&burst, &steady, 0.50);
    let (p99, _) = quantile(&burst, &steady, 0.99);
    let (bp99, bn) = quantile(&[], &burst, 0.99);
    let rss = proc_kb(pid, "VmRSS:");
    let peak = proc_kb(pid, "VmHWM:");
    let report = json!({
        "tables": args.tables,
        "create_seconds": created.as_secs_f64(),
        "all_reconciled_seconds": settled.as_secs_f64(),
        "burst": {"reconciles": bn, "p99_ms": bp99 * 1000.0, "rss_mb": rss_burst / 1024},
        "steady": {"seconds": args.steady_seconds, "reconciles": n, "p50_ms": p50 * 1000.0, "p99_ms": p99 * 1000.0},
        "rss_mb": rss / 1024,
        "peak_rss_mb": peak / 1024,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!(
        "\n{} KafkaTables: created in {:.1} s, all reconciled after {:.1} s\n\
         steady state ({} s, {} reconciles): p50 {:.1} ms, p99 {:.1} ms (target < 50 ms)\n\
         creation burst ({bn} reconciles): p99 {:.1} ms\n\
         operator RSS {} MB, peak {} MB (target < 100 MB)",
        args.tables,
        created.as_secs_f64(),
        settled.as_secs_f64(),
        args.steady_seconds,
        n,
        p50 * 1000.0,
        p99 * 1000.0,
        bp99 * 1000.0,
        rss / 1024,
        peak / 1024,
    );

    // Delete the tables while the operator runs (they carry its finalizer).
    tables
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !tables
        .list(&ListParams::default().limit(1))
        .await?
        .items
        .is_empty()
    {
        anyhow::ensure!(Instant::now() < deadline, "tables not deleted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(operator);
    Ok(())
}
