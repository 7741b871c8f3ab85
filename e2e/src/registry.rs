//! An Apicurio Registry of a test's own (the cached jar `infra.sh` runs), its schemas kept in an
//! H2 file database so that it can be stopped and started again on the same port and schemas,
//! without disturbing the tests that share the main one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::TestEnv;
use crate::fixtures::{free_port, unique, wait_answering};

pub struct PrivateRegistry {
    /// The Confluent-compatible API: `http://127.0.0.1:PORT/apis/ccompat/v7`.
    pub url: String,
    env: TestEnv,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRegistry {
    /// Starts a registry on a fresh port with an empty database, and waits until it answers.
    pub async fn start(env: &TestEnv) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("kt-registry"));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let mut registry = Self {
            url: format!("http://127.0.0.1:{port}/apis/ccompat/v7"),
            env: env.clone(),
            port,
            dir,
            child: None,
        };
        registry.resume().await?;
        Ok(registry)
    }

    /// Starts the registry again on the same port and database, and waits until it answers.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let log_path = self.dir.join("registry.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let db = self.dir.join("db");
        let child = Command::new(&self.env.registry_java)
            .args(["-Xms64m", "-Xmx256m", "-XX:TieredStopAtLevel=1"])
            .arg("-Dquarkus.http.host=127.0.0.1")
            .arg(format!("-Dquarkus.http.port={}", self.port))
            // The management interface (health, metrics) is built in; it gets a port of its
            // own so that registries side by side do not meet on its default 9000.
            .arg("-Dquarkus.management.host=127.0.0.1")
            .arg(format!("-Dquarkus.management.port={}", free_port()?))
            .arg(format!(
                "-Dapicurio.datasource.url=jdbc:h2:file:{}",
                db.display()
            ))
            .arg("-Dapicurio.datasource.jdbc.initial-size=2")
            .arg("-Dapicurio.datasource.jdbc.min-size=2")
            .arg("-jar")
            .arg(&self.env.registry_jar)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        let child = self.child.insert(child);
        let subjects = format!("{}/subjects", self.url);
        wait_answering(
            "the registry",
            &subjects,
            child,
            &log_path,
            Duration::from_secs(180),
        )
        .await
    }

    /// Stops the registry: SIGTERM, so that it closes its database with every schema
    /// registered so far, then SIGKILL after 60 s. Clients find nothing listening.
    pub fn stop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
