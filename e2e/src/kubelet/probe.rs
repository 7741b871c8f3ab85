//! Readiness and liveness probes: HTTP GET and TCP against the pod's IP, exec as a process.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Probe timing as the spec gives it, with Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Self {
        let secs =
            |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        Self {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_millis(200)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_millis(200)),
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Counts consecutive results and flips the verdict at the thresholds, as the kubelet does.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub ok: bool,
    successes: u32,
    failures: u32,
}

impl Verdict {
    pub fn new(initially_ok: bool) -> Self {
        Self {
            ok: initially_ok,
            successes: 0,
            failures: 0,
        }
    }

    /// Records one probe result; returns true when the verdict changed.
    pub fn record(&mut self, success: bool, timing: &Timing) -> bool {
        let before = self.ok;
        if success {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= timing.success_threshold {
                self.ok = true;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= timing.failure_threshold {
                self.ok = false;
            }
        }
        before != self.ok
    }
}

/// Runs one probe against the container at `pod_ip`. Errors count as failures.
pub async fn run(probe: &Probe, container: &Container, pod_ip: &str, timing: &Timing) -> bool {
    let attempt = async {
        if let Some(http) = &probe.http_get {
            let port = resolve_port(&http.port, container)?;
            let path = http.path.as_deref().unwrap_or("/");
            return Some(http_get(pod_ip, port, path).await);
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = resolve_port(&tcp.port, container)?;
            return Some(TcpStream::connect((pod_ip, port)).await.is_ok());
        }
        if let Some(exec) = &probe.exec {
            let argv = exec.command.as_deref().unwrap_or_default();
            let (program, args) = argv.split_first()?;
            let status = tokio::process::Command::new(program)
                .args(args)
                .status()
                .await
                .ok()?;
            return Some(status.success());
        }
        None
    };
    matches!(
        tokio::time::timeout(timing.timeout, attempt).await,
        Ok(Some(true))
    )
}

fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// A minimal HTTP/1.1 GET: success is a status from 200 to 399, as for the kubelet.
async fn http_get(ip: &str, port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect((ip, port)).await else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/process-kubelet\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 32];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    parse_status(&head[..read]).is_some_and(|code| (200..400).contains(&code))
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut parts = text.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_flips_only_at_thresholds() {
        let timing = Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 2,
            failure_threshold: 3,
        };
        let mut v = Verdict::new(false);
        assert!(!v.record(true, &timing));
        assert!(v.record(true, &timing), "second success makes it ready");
        assert!(!v.record(false, &timing));
        assert!(!v.record(false, &timing));
        assert!(
            !v.record(true, &timing),
            "a success resets the failure count"
        );
        assert!(!v.record(false, &timing) && !v.record(false, &timing));
        assert!(v.record(false, &timing), "third failure in a row");
        assert!(!v.ok);
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service"), Some(503));
        assert_eq!(parse_status(b"garbage"), None);
    }

    #[tokio::test]
    async fn http_probe_sees_the_status_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for code in ["200 OK", "500 Internal Server Error"] {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        assert!(http_get("127.0.0.1", port, "/readyz").await);
        assert!(!http_get("127.0.0.1", port, "/readyz").await);
        assert!(
            !http_get("127.0.0.1", port, "/readyz").await,
            "nothing listens any more"
        );
    }
}
