//! The operator installed with its Helm chart into a test's namespace (watching only that
//! namespace, so parallel tests each have their own), and helpers to follow its KafkaTables.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kafkatable_crds::{KafkaTable, KafkaTableStatus};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};

use crate::env::TestEnv;
use crate::fixtures::{eventually, pod_log};

/// The chart in this repository.
pub fn chart_dir() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/kafkatable-operator"
    ))
}

/// One operator release, watching one namespace.
pub struct OperatorRelease {
    pub namespace: String,
    pub release: String,
    env: TestEnv,
    client: kube::Client,
}

impl OperatorRelease {
    /// `helm install`s the chart into `namespace` (with `--set` pairs on top of the test
    /// defaults) and waits for the operator to run.
    pub async fn install(
        env: &TestEnv,
        client: &kube::Client,
        namespace: &str,
        sets: &[&str],
    ) -> anyhow::Result<Self> {
        let release = "kt".to_string();
        let mut cmd = Command::new(&env.helm);
        cmd.arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .args(["install", &release])
            .arg(chart_dir())
            .args(["--namespace", namespace, "--wait", "--timeout", "120s"])
            .args(["--set", &format!("watchNamespace={namespace}")])
            .args(["--set", "statusIntervalSeconds=2"])
            .args(["--set", "leaderElection.leaseSeconds=6"])
            .args(["--set", "logFormat=text"])
            .args(["--set", "ingester.terminationGracePeriodSeconds=30"]);
        for s in sets {
            cmd.args(["--set", s]);
        }
        let out = cmd.output()?;
        let installed = Self {
            namespace: namespace.to_string(),
            release,
            env: env.clone(),
            client: client.clone(),
        };
        anyhow::ensure!(
            out.status.success(),
            "helm install failed: {}\n{}\noperator log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            installed.logs()
        );
        Ok(installed)
    }

    /// The operator pods' logs (the process kubelet writes them to files).
    pub fn logs(&self) -> String {
        let dir = self.env.run_dir.join("kubelet/pods").join(&self.namespace);
        let mut text = String::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("kt-kafkatable-operator-")
                && let Ok(log) = std::fs::read_to_string(entry.path().join("operator.log"))
            {
                text.push_str(&format!("--- {name}\n{log}"));
            }
        }
        text
    }

    /// The logs of the ingester pods of table `name`, newest pod dirs included.
    pub fn ingester_logs(&self, name: &str) -> String {
        let dir = self.env.run_dir.join("kubelet/pods").join(&self.namespace);
        let prefix = format!("{name}-ingester-");
        let mut text = String::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let dir_name = entry.file_name().to_string_lossy().into_owned();
            if dir_name.starts_with(&prefix)
                && let Ok(log) = std::fs::read_to_string(entry.path().join("ingester.log"))
            {
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                text.push_str(&format!("--- {dir_name}\n{}\n", tail.join("\n")));
            }
        }
        text
    }

    /// Creates a Secret in the namespace from string pairs.
    pub async fn secret(&self, name: &str, pairs: &[(&str, &str)]) -> anyhow::Result<()> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            string_data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
            ),
            ..Secret::default()
        };
        api.create(&PostParams::default(), &secret).await?;
        Ok(())
    }

    /// Creates a KafkaTable from its JSON manifest (namespace filled in).
    pub async fn create_table(&self, mut manifest: serde_json::Value) -> anyhow::Result<()> {
        manifest["metadata"]["namespace"] = self.namespace.clone().into();
        let kt: KafkaTable = serde_json::from_value(manifest)?;
        let api: Api<KafkaTable> = Api::namespaced(self.client.clone(), &self.namespace);
        api.create(&PostParams::default(), &kt).await?;
        Ok(())
    }

    pub fn tables(&self) -> Api<KafkaTable> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The table's status, when it has one.
    pub async fn status(&self, name: &str) -> Option<KafkaTableStatus> {
        self.tables().get(name).await.ok()?.status
    }

    /// Waits until `check` accepts the status of table `name`; on timeout the operator's and
    /// the ingesters' logs are printed with the last status.
    pub async fn wait_status<F>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: F,
    ) -> KafkaTableStatus
    where
        F: Fn(&KafkaTableStatus) -> bool,
    {
        let check = &check;
        let result = tokio::time::timeout(
            timeout,
            eventually(what, timeout + Duration::from_secs(5), || async move {
                let status = self.status(name).await?;
                check(&status).then_some(status)
            }),
        )
        .await;
        match result {
            Ok(status) => status,
            Err(_) => {
                let last = self.status(name).await;
                panic!(
                    "timed out after {timeout:?} waiting for {what}\nlast status: {}\n\noperator log:\n{}\n\ningester logs:\n{}",
                    serde_json::to_string_pretty(&last).unwrap_or_default(),
                    self.logs(),
                    self.ingester_logs(name)
                );
            }
        }
    }

    /// The ingester pods of table `name` that are not being deleted.
    pub async fn ingester_pods(&self, name: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        api.list(&ListParams::default().labels(&format!("kafkatable.io/table={name}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// A container log of a pod in the namespace.
    pub fn pod_log(&self, pod: &str, container: &str) -> Option<String> {
        pod_log(&self.env, &self.namespace, pod, container)
    }
}

impl Drop for OperatorRelease {
    fn drop(&mut self) {
        // Tables carry the operator's finalizer: delete them while the operator still runs, or
        // the namespace could not go away.
        let _ = Command::new(&self.env.kubectl)
            .arg("--kubeconfig")
            .arg(&self.env.kubeconfig)
            .args(["delete", "kafkatables", "--all", "-n", &self.namespace])
            .args(["--wait=true", "--timeout=60s"])
            .output();
    }
}

/// The condition of `type_` in a status, as (status, reason, message).
pub fn condition(status: &KafkaTableStatus, type_: &str) -> Option<(String, String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Whether condition `type_` has status "True".
pub fn is_true(status: &KafkaTableStatus, type_: &str) -> bool {
    condition(status, type_).is_some_and(|(s, _, _)| s == "True")
}
