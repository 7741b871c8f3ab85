//! Runs the locally built `kafkatable-ingester` as a process for a test, with its own HTTP
//! port, work directory and log file, and stops it gracefully (SIGTERM) or not (SIGKILL).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running ingester.
pub struct IngesterProcess {
    child: Child,
    /// Address of its /metrics, /healthz and /readyz.
    pub http_addr: String,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

/// The ingester binary: `$KAFKATABLE_INGESTER_BIN`, else the one next to the test binaries
/// (`make build` builds it).
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("KAFKATABLE_INGESTER_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug/kafkatable-ingester
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("kafkatable-ingester"))
        .unwrap_or_default()
}

impl IngesterProcess {
    /// Starts `kafkatable-ingester run -f manifest` with secrets from `secrets_dir`.
    pub fn start(
        manifest: &Path,
        secrets_dir: &Path,
        work_dir: &Path,
        name: &str,
    ) -> std::io::Result<Self> {
        Self::start_with_env(manifest, secrets_dir, work_dir, name, &[])
    }

    /// As `start`, with extra environment variables (fault injection).
    pub fn start_with_env(
        manifest: &Path,
        secrets_dir: &Path,
        work_dir: &Path,
        name: &str,
        envs: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        Self::start_binary(&binary(), manifest, secrets_dir, work_dir, name, envs)
    }

    /// As `start_with_env`, with the ingester binary `bin` (a benchmark's baseline).
    pub fn start_binary(
        bin: &Path,
        manifest: &Path,
        secrets_dir: &Path,
        work_dir: &Path,
        name: &str,
        envs: &[(&str, &str)],
    ) -> std::io::Result<Self> {
        if !bin.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is missing: run `cargo build --workspace` first",
                    bin.display()
                ),
            ));
        }
        let http_addr = format!("127.0.0.1:{}", crate::fixtures::free_port()?);
        let log = work_dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(bin)
            .args(["run", "-f"])
            .arg(manifest)
            .arg("--http-addr")
            .arg(&http_addr)
            .arg("--secrets-dir")
            .arg(secrets_dir)
            .arg("--client-id")
            .arg(name)
            .env(
                "RUST_LOG",
                "info,rdkafka=warn,deltalake=warn,deltalake_core::writer::stats=error,buoyant_kernel=off",
            )
            .envs(envs.iter().copied())
            .current_dir(work_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Self {
            child,
            http_addr,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `grace` for a clean exit; returns the exit code.
    pub fn stop(mut self, grace: Duration) -> Option<i32> {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// SIGKILL: no chance to commit or leave the group.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process still runs; its exit code otherwise.
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    /// Waits up to `deadline` for the process to exit by itself, failing the test with `what`
    /// if it does not: its exit code (None: ended by a signal, an abort say).
    pub async fn exit_within(&mut self, what: &str, deadline: Duration) -> Option<i32> {
        crate::fixtures::eventually(what, deadline, || {
            let exited = self.exited();
            async move { exited }
        })
        .await
    }

    /// GET a path of its HTTP endpoint: (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://{}{path}", self.http_addr))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// The value of a metric without labels, from /metrics.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Every labelled series of a metric from /metrics: (labels, value).
    pub async fn metric_series(&self, name: &str) -> Vec<(String, f64)> {
        let Some((_, body)) = self.get("/metrics").await else {
            return Vec::new();
        };
        body.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix('{')?;
                let (labels, value) = rest.split_once("} ")?;
                Some((labels.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// Waits until the ingester has consumed `records`.
    pub async fn wait_consumed(&self, records: usize, deadline: Duration) {
        crate::fixtures::eventually("every record consumed", deadline, || async move {
            let consumed = self.metric("kafkatable_records_consumed_total").await?;
            (consumed >= records as f64).then_some(())
        })
        .await;
    }

    /// Waits until the ingester has consumed `records` and made at least `commits` table
    /// commits, and returns how many it has made and the most bytes it has buffered for one.
    pub async fn commits_once_consumed(
        &self,
        records: usize,
        commits: f64,
        deadline: Duration,
    ) -> (f64, f64) {
        self.wait_consumed(records, deadline).await;
        let what = format!("{commits} commits");
        crate::fixtures::eventually(&what, deadline, || async move {
            let made = self.metric("kafkatable_commits_total").await?;
            let peak = self.metric("kafkatable_buffered_bytes_peak").await?;
            (made >= commits).then_some((made, peak))
        })
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for IngesterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints the last lines of every ingester log in `dir` (for a failing test).
pub fn print_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- {} (last 40 lines) ---\n{tail}", path.display());
        }
    }
}

/// A scratch directory of its own for one test (manifests, Secret files, ingester logs, local
/// tables). It is removed when dropped; when the test is failing, the ingester logs in it are
/// printed first.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(crate::fixtures::unique(prefix));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// Writes the S3 credentials as the files of a Secret named `s3` (keys `accessKeyId` and
    /// `secretAccessKey`) and returns the secrets directory to hand to the ingester.
    pub fn s3_secret(&self, env: &crate::env::TestEnv) -> std::io::Result<PathBuf> {
        let secrets = self.path.join("secrets");
        std::fs::create_dir_all(secrets.join("s3"))?;
        std::fs::write(secrets.join("s3/accessKeyId"), &env.s3_access_key)?;
        std::fs::write(secrets.join("s3/secretAccessKey"), &env.s3_secret_key)?;
        Ok(secrets)
    }
}

impl std::ops::Deref for WorkDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_logs(&self.path);
        }
        std::fs::remove_dir_all(&self.path).ok();
    }
}
