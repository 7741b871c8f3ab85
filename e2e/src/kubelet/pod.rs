//! Runs one pod: prepares its directory and volumes, runs init containers to completion, then
//! supervises its containers and keeps the pod's status in the API server up to date.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::RUN_IN_ROOTFS;
use super::container::{self, Report, RestartPolicy, State, Stop, Supervised};
use super::image::Image;
use super::sandbox::{BindMount, Sandbox};
use super::spec::{self, PodFields, Refs};
use super::volumes::{self, ApiAccess, SERVICE_ACCOUNT_DIR};
use super::{Context, KubeletError};

/// How long a pod waits before retrying a preparation that failed (missing ConfigMap, ...).
const PREPARE_RETRY: Duration = Duration::from_secs(2);

/// Runs the pod until its containers complete for good or `stop` says otherwise.
pub async fn run(
    ctx: Arc<Context>,
    pod: Pod,
    pod_ip: String,
    mut stop: watch::Receiver<Option<Stop>>,
) {
    let mut runner = Runner::new(ctx, pod, pod_ip);
    let launches = loop {
        match runner.prepare().await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(pod = %runner.key(), error = %e, "cannot start pod yet");
                runner
                    .patch_waiting(e.waiting_reason(), &e.to_string())
                    .await;
                tokio::select! {
                    _ = tokio::time::sleep(PREPARE_RETRY) => {}
                    _ = stop.changed() => {}
                }
                let stopped = *stop.borrow();
                if let Some(s) = stopped {
                    runner.finish(s).await;
                    return;
                }
            }
        }
    };
    let (init, main) = launches;
    let policy = RestartPolicy::parse(runner.restart_policy());
    let init_policy = if policy == RestartPolicy::Never {
        policy
    } else {
        RestartPolicy::OnFailure
    };
    for (c, launch) in init {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let code =
            container::supervise(runner.supervised(0, c, launch, init_policy, tx, stop.clone()))
                .await;
        while rx.try_recv().is_ok() {}
        let stopped = *stop.borrow();
        if let Some(s) = stopped {
            runner.finish(s).await;
            return;
        }
        if code != 0 {
            runner.patch_phase("Failed", "Init container failed").await;
            return;
        }
    }
    runner.initialized = true;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (i, (c, launch)) in main.into_iter().enumerate() {
        runner.reports.push(None);
        runner.names.push(c.name.clone());
        runner.image_ids.push(launch.image_id.clone());
        let s = runner.supervised(i, c, launch, policy, tx.clone(), stop.clone());
        tasks.push(tokio::spawn(container::supervise(s)));
    }
    drop(tx);
    while let Some((i, report)) = rx.recv().await {
        runner.reports[i] = Some(report);
        // Coalesce a burst of reports into one status write.
        while let Ok((i, report)) = rx.try_recv() {
            runner.reports[i] = Some(report);
        }
        runner.patch_status().await;
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap_or(255));
    }
    let stopped = *stop.borrow();
    match stopped {
        Some(s) => runner.finish(s).await,
        None => {
            let phase = if codes.iter().all(|c| *c == 0) {
                "Succeeded"
            } else {
                "Failed"
            };
            runner.patch_phase(phase, "").await;
        }
    }
}

struct Runner {
    ctx: Arc<Context>,
    pod: Pod,
    pod_ip: String,
    pod_dir: PathBuf,
    started_at: Timestamp,
    initialized: bool,
    names: Vec<String>,
    /// Per container, the `imageID` to report (empty on the host fast path).
    image_ids: Vec<String>,
    reports: Vec<Option<Report>>,
    /// Last transition time of each pod condition, so that times only move on a change.
    transitions: BTreeMap<&'static str, (bool, Timestamp)>,
}

impl Runner {
    fn new(ctx: Arc<Context>, pod: Pod, pod_ip: String) -> Self {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let short: String = uid.chars().take(8).collect();
        let pod_dir = ctx.root_dir.join(ns).join(format!("{name}-{short}"));
        Self {
            ctx,
            pod,
            pod_ip,
            pod_dir,
            started_at: Timestamp::now(),
            initialized: false,
            names: Vec::new(),
            image_ids: Vec::new(),
            reports: Vec::new(),
            transitions: BTreeMap::new(),
        }
    }

    fn key(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.pod.metadata.name.as_deref().unwrap_or_default()
        )
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(
            self.ctx.client.clone(),
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
        )
    }

    fn restart_policy(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
    }

    fn supervised(
        &self,
        index: usize,
        container: Container,
        launch: spec::Launch,
        policy: RestartPolicy,
        reports: mpsc::UnboundedSender<(usize, Report)>,
        stop: watch::Receiver<Option<Stop>>,
    ) -> Supervised {
        let log_path = self.pod_dir.join(format!("{}.log", container.name));
        Supervised {
            index,
            container,
            launch,
            policy,
            pod_ip: self.pod_ip.clone(),
            log_path,
            reports,
            stop,
        }
    }

    /// Fetches what the pod refers to, writes its volumes and resolves every container.
    async fn prepare(
        &self,
    ) -> Result<
        (
            Vec<(Container, spec::Launch)>,
            Vec<(Container, spec::Launch)>,
        ),
        KubeletError,
    > {
        std::fs::create_dir_all(&self.pod_dir).map_err(|e| KubeletError::io(&self.pod_dir, e))?;
        let ns = self.pod.metadata.namespace.clone().unwrap_or_default();
        let fields = PodFields::new(&self.pod, &self.pod_ip);
        let refs = self.fetch_refs(&ns).await?;
        let access = ApiAccess {
            client: &self.ctx.client,
            server: &self.ctx.server,
            ca_file: &self.ctx.ca_file,
        };
        let dirs = volumes::materialize(&self.pod, &fields, &refs, &self.pod_dir, &access).await?;
        let tmp = self.pod_dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| KubeletError::io(&tmp, e))?;
        let spec = self.pod.spec.clone().unwrap_or_default();
        let mut images = BTreeMap::new();
        if let Some(store) = &self.ctx.images {
            for c in spec
                .init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
            {
                let reference = c.image.clone().unwrap_or_default();
                images.insert(c.name.clone(), store.resolve(&reference).await?);
            }
        }
        let build = |c: &Container| -> Result<(Container, spec::Launch), KubeletError> {
            if let Some(image) = images.get(&c.name) {
                let launch = self.image_launch(c, image, &spec, &fields, &refs, &dirs)?;
                return Ok((c.clone(), launch));
            }
            let mounts = volumes::mounts_for(c, &spec, &dirs);
            let mut base = self.ctx.base_env.clone();
            base.insert("HOME".into(), self.pod_dir.display().to_string());
            base.insert("TMPDIR".into(), tmp.display().to_string());
            base.insert("HOSTNAME".into(), fields.name.clone());
            if let Some((_, token_dir)) = mounts.iter().find(|(m, _)| m == SERVICE_ACCOUNT_DIR) {
                let kubeconfig = volumes::write_kubeconfig(&self.pod_dir, token_dir, &ns, &access)?;
                base.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
            }
            let launch = spec::launch(
                c,
                &fields,
                &refs,
                &mounts,
                self.ctx
                    .bin_dir
                    .as_deref()
                    .unwrap_or(Path::new("/nonexistent")),
                &self.pod_dir,
                &base,
            )?;
            Ok((c.clone(), launch))
        };
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(build)
            .collect::<Result<_, _>>()?;
        let main = spec
            .containers
            .iter()
            .map(build)
            .collect::<Result<_, _>>()?;
        Ok((init, main))
    }

    /// The launch of a container from its image: the process kubelet re-runs itself as
    /// `run-in-rootfs`, which builds the container's root and execs the command in it.
    fn image_launch(
        &self,
        c: &Container,
        image: &Image,
        spec: &PodSpec,
        fields: &PodFields,
        refs: &Refs,
        dirs: &BTreeMap<String, PathBuf>,
    ) -> Result<spec::Launch, KubeletError> {
        let refused = |what: String| KubeletError::Refused {
            container: c.name.clone(),
            what,
        };
        let mut kubelet_env = BTreeMap::from([("HOSTNAME".to_string(), fields.name.clone())]);
        if let Ok(url) = url::Url::parse(&self.ctx.server) {
            let host = url.host_str().unwrap_or("127.0.0.1").to_string();
            let port = url.port_or_known_default().unwrap_or(443).to_string();
            kubelet_env.insert("KUBERNETES_SERVICE_HOST".into(), host);
            kubelet_env.insert("KUBERNETES_SERVICE_PORT".into(), port);
        }
        let env = spec::image_env(
            &image.config,
            &kubelet_env,
            spec::resolve_env(c, fields, refs)?,
        );
        let argv = spec::image_argv(c, &image.config, &env);
        let passwd = std::fs::read_to_string(image.rootfs.join("etc/passwd")).unwrap_or_default();
        let (uid, gid, groups) = spec::run_as(
            c,
            spec.security_context.as_ref(),
            image.config.user.as_deref(),
            &passwd,
        )
        .map_err(refused)?;
        let etc = self.write_etc_files()?;
        let mut mounts = volumes::bind_mounts(c, spec, dirs);
        mounts.extend(etc);
        let containers = self.pod_dir.join("containers");
        std::fs::create_dir_all(&containers).map_err(|e| KubeletError::io(&containers, e))?;
        let sandbox = Sandbox {
            rootfs: image.rootfs.clone(),
            state_dir: containers.join(&c.name),
            read_only_root: c
                .security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem)
                .unwrap_or(false),
            mounts,
            uid,
            gid,
            groups,
            workdir: c
                .working_dir
                .clone()
                .or_else(|| image.config.working_dir.clone())
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "/".into()),
            argv,
            env: env.into_iter().collect(),
        };
        let path = containers.join(format!("{}.json", c.name));
        let text = serde_json::to_vec_pretty(&sandbox).map_err(KubeletError::Json)?;
        std::fs::write(&path, text).map_err(|e| KubeletError::io(&path, e))?;
        let repository = c.image.as_deref().unwrap_or_default();
        let repository = repository.split('@').next().unwrap_or_default();
        let repository = match repository.rsplit_once(':') {
            Some((r, tag)) if !tag.contains('/') => r,
            _ => repository,
        };
        Ok(spec::Launch {
            program: self.ctx.self_exe.clone(),
            args: vec![RUN_IN_ROOTFS.into(), path.display().to_string()],
            env: BTreeMap::new(),
            workdir: self.pod_dir.clone(),
            image_id: format!("{repository}@{}", image.digest),
        })
    }

    /// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` as the kubelet writes them for a pod.
    fn write_etc_files(&self) -> Result<Vec<BindMount>, KubeletError> {
        let dir = self.pod_dir.join("etc");
        std::fs::create_dir_all(&dir).map_err(|e| KubeletError::io(&dir, e))?;
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let files = [
            (
                "hosts",
                format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{name}\n",
                    self.pod_ip
                ),
            ),
            ("hostname", format!("{name}\n")),
            ("resolv.conf", resolv),
        ];
        let mut mounts = Vec::new();
        for (file, content) in files {
            let path = dir.join(file);
            std::fs::write(&path, content).map_err(|e| KubeletError::io(&path, e))?;
            mounts.push(BindMount {
                source: path,
                target: format!("/etc/{file}"),
                read_only: false,
            });
        }
        Ok(mounts)
    }

    async fn fetch_refs(&self, ns: &str) -> Result<Refs, KubeletError> {
        let (cm_names, secret_names) = spec::referenced_objects(&self.pod);
        let mut refs = Refs::default();
        let cms: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), ns);
        for name in cm_names {
            if let Some(cm) = cms
                .get_opt(&name)
                .await
                .map_err(|source| KubeletError::Api {
                    action: "get a ConfigMap",
                    source,
                })?
            {
                refs.config_maps.insert(name, cm);
            }
        }
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), ns);
        for name in secret_names {
            if let Some(s) = secrets
                .get_opt(&name)
                .await
                .map_err(|source| KubeletError::Api {
                    action: "get a Secret",
                    source,
                })?
            {
                refs.secrets.insert(name, s);
            }
        }
        Ok(refs)
    }

    /// After the processes are gone: delete the Pod object if it was deleted gracefully.
    async fn finish(&self, stop: Stop) {
        if !stop.delete_object {
            return;
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match self.api().delete(&name, &dp).await {
            Ok(_) => tracing::info!(pod = %self.key(), "pod deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => tracing::warn!(pod = %self.key(), error = %e, "cannot delete pod"),
        }
        if let Err(e) = std::fs::remove_dir_all(&self.pod_dir) {
            tracing::debug!(dir = %self.pod_dir.display(), error = %e, "cannot remove pod dir");
        }
    }

    fn condition(&mut self, kind: &'static str, ok: bool) -> Value {
        let now = Timestamp::now();
        let entry = self.transitions.entry(kind).or_insert((ok, now));
        if entry.0 != ok {
            *entry = (ok, now);
        }
        json!({
            "type": kind,
            "status": if ok { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": entry.1.to_string(),
        })
    }

    fn base_status(&mut self, phase: &str, all_ready: bool) -> Value {
        let initialized = self.initialized;
        let conditions = vec![
            self.condition("PodScheduled", true),
            self.condition("Initialized", initialized),
            self.condition("ContainersReady", all_ready),
            self.condition("Ready", all_ready),
        ];
        json!({
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.started_at.to_string(),
            "conditions": conditions,
        })
    }

    async fn patch_status(&mut self) {
        let all_ready = self
            .reports
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.ready));
        let statuses: Vec<Value> = self
            .names
            .iter()
            .zip(&self.reports)
            .zip(&self.image_ids)
            .map(|((name, r), id)| {
                container_status(name, r.as_ref(), &self.container_image(name), id)
            })
            .collect();
        let mut status = self.base_status("Running", all_ready);
        status["containerStatuses"] = Value::Array(statuses);
        self.write(status).await;
    }

    async fn patch_waiting(&mut self, reason: &str, message: &str) {
        let statuses: Vec<Value> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| {
                json!({
                    "name": c.name, "ready": false, "restartCount": 0, "started": false,
                    "image": c.image.clone().unwrap_or_default(), "imageID": "",
                    "state": {"waiting": {"reason": reason, "message": message}},
                })
            })
            .collect();
        let mut status = self.base_status("Pending", false);
        status["containerStatuses"] = Value::Array(statuses);
        self.write(status).await;
    }

    async fn patch_phase(&mut self, phase: &str, message: &str) {
        let mut status = self.base_status(phase, false);
        if !message.is_empty() {
            status["message"] = json!(message);
        }
        if !self.names.is_empty() {
            let statuses: Vec<Value> = self
                .names
                .iter()
                .zip(&self.reports)
                .zip(&self.image_ids)
                .map(|((name, r), id)| {
                    container_status(name, r.as_ref(), &self.container_image(name), id)
                })
                .collect();
            status["containerStatuses"] = Value::Array(statuses);
        }
        self.write(status).await;
    }

    fn container_image(&self, name: &str) -> String {
        self.pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .find(|c| c.name == name)
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    }

    async fn write(&self, status: Value) {
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(json!({ "status": status }));
        if let Err(e) = self
            .api()
            .patch_status(&name, &PatchParams::default(), &patch)
            .await
        {
            // A pod deleted under us answers 404; its task is about to be stopped.
            tracing::debug!(pod = %self.key(), error = %e, "cannot write pod status");
        }
    }
}

/// One entry of `status.containerStatuses`.
fn container_status(name: &str, report: Option<&Report>, image: &str, image_id: &str) -> Value {
    let Some(r) = report else {
        return json!({
            "name": name, "ready": false, "started": false, "restartCount": 0, "image": image,
            "imageID": image_id, "state": {"waiting": {"reason": "ContainerCreating"}},
        });
    };
    let terminated = |t: &container::Terminated| {
        let mut state = json!({"terminated": {
            "exitCode": t.exit_code, "reason": t.reason,
            "startedAt": t.started_at.to_string(), "finishedAt": t.finished_at.to_string(),
        }});
        if let Some(message) = &t.message {
            state["terminated"]["message"] = json!(message);
        }
        state
    };
    let (state, started, container_id) = match &r.state {
        State::Waiting { reason, message } => (
            json!({"waiting": {"reason": reason, "message": message}}),
            false,
            None,
        ),
        State::Running { started_at, pid } => (
            json!({"running": {"startedAt": started_at.to_string()}}),
            true,
            Some(format!("process://{pid}")),
        ),
        State::Terminated(t) => (terminated(t), false, None),
    };
    let mut status = json!({
        "name": name, "ready": r.ready, "started": started, "restartCount": r.restart_count,
        "image": image, "imageID": image_id, "state": state,
    });
    if let Some(id) = container_id {
        status["containerID"] = json!(id);
    }
    if let Some(t) = &r.last_terminated {
        status["lastState"] = terminated(t);
    }
    status
}
