//! The operator's Prometheus metrics and its HTTP endpoints (`/metrics`, `/healthz`).

use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

/// Every metric the operator exports (prefix `kafkatable_operator_`).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// Reconcile durations by result.
    pub reconcile_seconds: HistogramVec,
    /// Failed reconciles by kind of error.
    pub errors: IntCounterVec,
    /// Ingester replicas the operator wants, per table.
    pub desired_replicas: IntGaugeVec,
    /// Total lag per table.
    pub lag: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("kafkatable_operator".into()), None)?;
        let reconciles = IntCounterVec::new(
            Opts::new("reconciles_total", "Reconciles by result"),
            &["result"],
        )?;
        let reconcile_seconds = HistogramVec::new(
            HistogramOpts::new("reconcile_duration_seconds", "Reconcile durations").buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("reconcile_errors_total", "Failed reconciles by kind"),
            &["kind"],
        )?;
        let desired_replicas = IntGaugeVec::new(
            Opts::new("desired_replicas", "Ingester replicas the operator wants"),
            &["namespace", "name"],
        )?;
        let lag = IntGaugeVec::new(
            Opts::new(
                "lag_records",
                "Records in the topic not yet committed to the table",
            ),
            &["namespace", "name"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_seconds.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(desired_replicas.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_seconds,
            errors,
            desired_replicas,
            lag,
        })
    }

    /// Forgets the series of a deleted table.
    pub fn forget(&self, namespace: &str, name: &str) {
        let _ = self
            .desired_replicas
            .remove_label_values(&[namespace, name]);
        let _ = self.lag.remove_label_values(&[namespace, name]);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Serves `/metrics` and `/healthz` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let (status, body) = match req.uri().path() {
                    "/metrics" => (StatusCode::OK, metrics.render()),
                    "/healthz" | "/readyz" => (StatusCode::OK, "ok\n".to_string()),
                    _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
                };
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
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
