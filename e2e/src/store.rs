//! A MinIO server of a test's own (the cached binary `infra.sh` runs), for tests that kill the
//! object store and start it again on the same port and data, without disturbing the tests
//! that share the main one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::env::TestEnv;
use crate::fixtures::{free_port, unique, wait_answering};

pub struct PrivateMinio {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// The shared environment with this server as its object store.
    pub env: TestEnv,
    port: u16,
    console_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateMinio {
    /// Starts a server on fresh ports with an empty data directory.
    pub async fn start(env: &TestEnv) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("kt-minio"));
        std::fs::create_dir_all(dir.join("data"))?;
        let port = free_port()?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut env = env.clone();
        env.s3_endpoint = endpoint.clone();
        let mut minio = Self {
            endpoint,
            env,
            port,
            console_port: free_port()?,
            dir,
            child: None,
        };
        minio.resume().await?;
        Ok(minio)
    }

    /// Starts the server again on the same port and data, and waits until it is ready.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("minio.log"))?;
        let child = Command::new(&self.env.minio_bin)
            .arg("server")
            .arg(self.dir.join("data"))
            .args(["--address", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--console-address",
                &format!("127.0.0.1:{}", self.console_port),
            ])
            .arg("--quiet")
            .env("MINIO_ROOT_USER", &self.env.s3_access_key)
            .env("MINIO_ROOT_PASSWORD", &self.env.s3_secret_key)
            .env("MINIO_BROWSER", "off")
            .env("MINIO_UPDATE", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        let child = self.child.insert(child);
        let ready = format!("{}/minio/health/ready", self.endpoint);
        let log = self.dir.join("minio.log");
        wait_answering("MinIO", &ready, child, &log, Duration::from_secs(60)).await
    }

    /// Kills the server (SIGKILL): clients see it vanish mid-request.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateMinio {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
