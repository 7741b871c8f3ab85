//! A Kafka broker of a test's own (one KRaft node from the cached distribution), for tests
//! that stop and start the broker without disturbing the tests sharing the main one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::env::TestEnv;
use crate::fixtures::{free_port, unique};

/// A single-node KRaft broker with a PLAINTEXT listener on a fixed port.
pub struct PrivateBroker {
    pub bootstrap: String,
    dir: PathBuf,
    classpath: String,
    child: Option<Child>,
}

impl PrivateBroker {
    /// Formats a fresh log directory and starts the broker.
    pub fn start(env: &TestEnv) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique("kt-broker"));
        std::fs::create_dir_all(dir.join("data"))?;
        let port = free_port()?;
        let controller = free_port()?;
        let properties = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             log.dirs={}\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             auto.create.topics.enable=false\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("server.properties"), properties)?;
        std::fs::write(
            dir.join("log4j.properties"),
            "log4j.rootLogger=WARN, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\n\
             log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n\
             log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n\
             log4j.logger.kafka.server.KafkaServer=INFO\nlog4j.logger.kafka.server.KafkaRaftServer=INFO\n\
             log4j.logger.kafka.server.BrokerServer=INFO\n",
        )?;
        let format = Command::new("java")
            .arg(format!(
                "-Dlog4j.configuration=file:{}/log4j.properties",
                dir.display()
            ))
            .args([
                "-cp",
                &env.kafka_classpath,
                "kafka.tools.StorageTool",
                "format",
            ])
            .args(["-t", "a2Fma2F0YWJsZS10ZXN0MQ", "-c"])
            .arg(dir.join("server.properties"))
            .output()?;
        anyhow::ensure!(
            format.status.success(),
            "kafka storage format failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        let mut broker = Self {
            bootstrap: format!("127.0.0.1:{port}"),
            dir,
            classpath: env.kafka_classpath.clone(),
            child: None,
        };
        broker.resume()?;
        Ok(broker)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    /// Starts the broker again on the same port and data, and waits until it serves.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new("java")
            .args(["-Xms128m", "-Xmx384m", "-XX:+UseSerialGC"])
            .arg(format!(
                "-Dlog4j.configuration=file:{}/log4j.properties",
                self.dir.display()
            ))
            .args(["-cp", &self.classpath, "kafka.Kafka"])
            .arg(self.dir.join("server.properties"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        let started = std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .matches("Kafka Server started")
            .count();
        loop {
            let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if text.matches("Kafka Server started").count() > started {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                anyhow::bail!("the broker exited with {status}:\n{text}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the broker did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the broker (SIGKILL): clients see it vanish.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
