//! `/metrics`, `/healthz` (the process runs), `/readyz` (partitions assigned, broker and table
//! reachable) and `/status` (the [`IngesterReport`] the operator reads).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kafkatable_crds::report::IngesterReport;
use tokio::net::TcpListener;

use crate::error::IngesterError;
use crate::metrics::Metrics;

/// Readiness and progress as the run loop and the Kafka client report them.
#[derive(Default)]
pub struct Health {
    /// The member holds partitions and has read their sync points from the table.
    pub assigned: AtomicBool,
    /// The last table operation succeeded (or none failed yet).
    pub table_ok: AtomicBool,
    /// The client has a connection to a broker (from librdkafka's statistics and errors).
    pub broker_ok: AtomicBool,
    /// A schema-registry request is being retried: records that need it wait.
    pub registry_down: AtomicBool,
    report: Mutex<IngesterReport>,
    /// Bad records passed by commits (when, how many), over the rate window.
    bad_records: Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>,
    /// `errors.degradedRate.window`.
    rate_window: Mutex<std::time::Duration>,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
            && self.table_ok.load(Ordering::Relaxed)
            && self.broker_ok.load(Ordering::Relaxed)
            && !self.registry_down.load(Ordering::Relaxed)
    }

    /// Changes the report (never held across an await).
    pub fn update(&self, change: impl FnOnce(&mut IngesterReport)) {
        if let Ok(mut report) = self.report.lock() {
            change(&mut report);
        }
    }

    pub fn broker(&self, error: Option<String>) {
        self.broker_ok.store(error.is_none(), Ordering::Relaxed);
        self.update(|r| r.broker_error = error);
    }

    pub fn table(&self, error: Option<String>) {
        self.table_ok.store(error.is_none(), Ordering::Relaxed);
        self.update(|r| r.table_error = error);
    }

    pub fn registry(&self, error: Option<String>) {
        let down = error.is_some();
        if self.registry_down.swap(down, Ordering::Relaxed) != down {
            match &error {
                Some(e) => {
                    tracing::warn!(error = %e, "the schema registry does not answer; records that need a schema wait")
                }
                None => tracing::info!("the schema registry answers again"),
            }
        }
        self.update(|r| r.registry_error = error);
    }

    /// Counts bad records a commit passed (skipped or dead-lettered), for the rate.
    pub fn bad_records(&self, count: u64) {
        if let Ok(mut recent) = self.bad_records.lock() {
            recent.push_back((std::time::Instant::now(), count));
        }
    }

    /// Sets the window over which bad records are counted (`errors.degradedRate.window`).
    pub fn set_rate_window(&self, window: std::time::Duration) {
        if let Ok(mut w) = self.rate_window.lock() {
            *w = window;
        }
    }

    pub fn report(&self) -> IngesterReport {
        let mut report = self.report.lock().map(|r| r.clone()).unwrap_or_default();
        report.ready = self.ready();
        let window = self.rate_window.lock().map(|w| *w).unwrap_or_default();
        if let Ok(mut recent) = self.bad_records.lock() {
            while recent.front().is_some_and(|(at, _)| at.elapsed() > window) {
                recent.pop_front();
            }
            report.recent_bad_records = recent.iter().map(|(_, n)| n).sum();
        }
        report
    }
}

/// Serves until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Arc<Health>,
) -> Result<(), IngesterError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| IngesterError::Http { addr, source })?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let response = route(req.uri().path(), &metrics, &health);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "http connection ended");
            }
        });
    }
}

fn route(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if health.ready() => (StatusCode::OK, "ready\n".to_string()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
        "/status" => (
            StatusCode::OK,
            serde_json::to_string(&health.report()).unwrap_or_default(),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
