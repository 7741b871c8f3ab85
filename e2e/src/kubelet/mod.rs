//! The process kubelet: a test stand-in for the kubelet and its container runtime.
//!
//! It registers a Node, binds unscheduled pods to it, and runs each pod's containers from their
//! images (`image`: OCI archives unpacked once per digest; `sandbox`: a mount namespace, an
//! overlay root, the volumes bound in, `chroot`, the security context's user), or, on the
//! inner loop's fast path, as host processes of locally built binaries. Each pod gets its own
//! loopback address (127.1.x.y) as its pod IP, so replicas can listen on the same port;
//! programs should bind `$(POD_IP)`. Readiness and liveness probes (HTTP GET, TCP, exec on the
//! host), restart policies with back-off, ConfigMap/Secret/emptyDir/downward API/projected
//! service-account token volumes, `$(VAR)` expansion, graceful termination and termination
//! messages (`FallbackToLogsOnError`) work as in Kubernetes. Not emulated: namespaces other
//! than mounts, resource limits (no cgroups), Service cluster IPs (no kube-proxy),
//! `kubectl logs/exec` (logs are files in the pod dir).

mod container;
pub mod image;
mod node;
mod pod;
mod probe;
pub mod sandbox;
pub mod spec;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use container::START_ERROR_PREFIX;
use container::Stop;

/// What went wrong in the process kubelet, with the object or file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("cannot {action}: {source}")]
    Api {
        action: &'static str,
        source: kube::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {container}: {kind} {name:?}{} not found", key.as_ref().map(|k| format!(" key {k:?}")).unwrap_or_default())]
    MissingReference {
        container: String,
        kind: String,
        name: String,
        key: Option<String>,
    },
    #[error("container {container}: no command and no image to name a host binary")]
    NoCommand { container: String },
    #[error("container {container}: program {program:?} found neither in {} nor on PATH", bin_dir.display())]
    ProgramNotFound {
        container: String,
        program: String,
        bin_dir: PathBuf,
    },
    #[error("container {container}: unsupported {what}")]
    Unsupported { container: String, what: String },
    #[error("container {container}: {what}")]
    Refused { container: String, what: String },
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error("cannot encode JSON: {0}")]
    Json(serde_json::Error),
}

/// The subcommand of `process-kubelet` that runs a container inside its image's root
/// filesystem (`sandbox::enter`).
pub const RUN_IN_ROOTFS: &str = "run-in-rootfs";

impl KubeletError {
    /// The reason a container waits with when its pod cannot start for this error.
    pub fn waiting_reason(&self) -> &'static str {
        match self {
            Self::Image(image::ImageError::NotFound { .. }) => "ImagePullBackOff",
            Self::Image(_) => "ErrImagePull",
            _ => "CreateContainerConfigError",
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// How the process kubelet runs a container.
#[derive(Debug, Clone)]
pub enum Runtime {
    /// From its image: the OCI archives in `archives`, unpacked into `cache` once per digest.
    Images { archives: PathBuf, cache: PathBuf },
    /// As a host process of the binary its command names, found first in `bin_dir` (the
    /// inner development loop's fast path: no image build).
    HostBinaries { bin_dir: PathBuf },
}

/// Settings of the process kubelet.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of the Node to register and run pods for.
    pub node_name: String,
    /// Directory that holds one directory per pod (volumes, logs, HOME, TMPDIR).
    pub root_dir: PathBuf,
    /// How containers run: from images, or as host binaries (the inner-loop fast path).
    pub runtime: Runtime,
    /// API server URL that pods' kubeconfigs point at.
    pub server: String,
    /// CA certificate of the API server, for pods' kubeconfigs.
    pub ca_file: PathBuf,
    /// Grace period given to pods when the kubelet itself shuts down.
    pub shutdown_grace: Duration,
}

/// Shared by every pod task.
pub struct Context {
    /// Client with the kubelet's credentials.
    pub client: kube::Client,
    /// Directory that holds one directory per pod.
    pub root_dir: PathBuf,
    /// Directory searched first for container commands (host fast path only).
    pub bin_dir: Option<PathBuf>,
    /// Where images are looked up and unpacked; `None` on the host fast path.
    pub images: Option<image::ImageStore>,
    /// This program, which re-runs itself as `run-in-rootfs` for each container.
    pub self_exe: PathBuf,
    /// API server URL for pods' kubeconfigs.
    pub server: String,
    /// API server CA for pods' kubeconfigs.
    pub ca_file: PathBuf,
    /// Environment every container starts from (PATH and locale of the kubelet).
    pub base_env: BTreeMap<String, String>,
    /// Next pod IP to hand out.
    next_ip: AtomicU32,
}

impl Context {
    /// Hands out pod IPs 127.1.0.1, 127.1.0.2, ... (the whole of 127/8 routes to loopback).
    fn allocate_ip(&self) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        pod_ip(n).to_string()
    }
}

fn pod_ip(n: u32) -> Ipv4Addr {
    let n = n % (254 * 254);
    Ipv4Addr::new(127, 1, (n / 254) as u8, (n % 254 + 1) as u8)
}

struct Running {
    stop: watch::Sender<Option<Stop>>,
    task: JoinHandle<()>,
}

/// Runs the kubelet until SIGTERM or SIGINT.
pub async fn run(client: kube::Client, config: Config) -> Result<(), KubeletError> {
    std::fs::create_dir_all(&config.root_dir).map_err(|e| KubeletError::io(&config.root_dir, e))?;
    let since = Timestamp::now();
    node::register(&client, &config.node_name, since).await?;
    tracing::info!(node = %config.node_name, "node registered");

    let base_env = ["PATH", "LANG", "LC_ALL", "RUST_BACKTRACE"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    let (bin_dir, images) = match &config.runtime {
        Runtime::Images { archives, cache } => (
            None,
            Some(image::ImageStore::new(archives.clone(), cache.clone())),
        ),
        Runtime::HostBinaries { bin_dir } => (Some(bin_dir.clone()), None),
    };
    if let Some(store) = &images {
        store.prune()?;
    }
    let self_exe =
        std::env::current_exe().map_err(|e| KubeletError::io(Path::new("/proc/self/exe"), e))?;
    let ctx = Arc::new(Context {
        client: client.clone(),
        root_dir: config.root_dir.clone(),
        bin_dir,
        images,
        self_exe,
        server: config.server.clone(),
        ca_file: config.ca_file.clone(),
        base_env,
        next_ip: AtomicU32::new(0),
    });

    let beat_client = client.clone();
    let node_name = config.node_name.clone();
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(node::HEARTBEAT);
        loop {
            tick.tick().await;
            if let Err(e) = node::heartbeat(&beat_client, &node_name, since).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    });

    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher::watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| KubeletError::io(Path::new("SIGTERM"), e))?;

    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = tokio::signal::ctrl_c() => None,
            _ = terminate.recv() => None,
        };
        let Some(event) = event else { break };
        match event {
            Ok(Event::Init) => seen.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    seen.insert(uid);
                }
                on_pod(&ctx, &config, &pods, &mut running, pod).await;
            }
            Ok(Event::InitDone) => {
                // Pods that vanished while the watch was down.
                let gone: Vec<String> = running
                    .keys()
                    .filter(|uid| !seen.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    if let Some(r) = running.remove(&uid) {
                        let _ = r.stop.send(Some(Stop {
                            grace: Duration::ZERO,
                            delete_object: false,
                        }));
                    }
                }
            }
            Ok(Event::Apply(pod)) => on_pod(&ctx, &config, &pods, &mut running, pod).await,
            Ok(Event::Delete(pod)) => {
                if let Some(r) = pod
                    .metadata
                    .uid
                    .as_ref()
                    .and_then(|uid| running.remove(uid))
                {
                    let _ = r.stop.send(Some(Stop {
                        grace: Duration::ZERO,
                        delete_object: false,
                    }));
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch error"),
        }
        running.retain(|_, r| !r.task.is_finished() || r.stop.borrow().is_none());
    }

    tracing::info!(pods = running.len(), "shutting down: stopping pods");
    heartbeat.abort();
    let stop = Stop {
        grace: config.shutdown_grace,
        delete_object: false,
    };
    let mut tasks = Vec::new();
    for (_, r) in running.drain() {
        let _ = r.stop.send(Some(stop));
        tasks.push(r.task);
    }
    for t in tasks {
        let _ = tokio::time::timeout(config.shutdown_grace + Duration::from_secs(5), t).await;
    }
    Ok(())
}

/// Reacts to the current state of one pod: bind it, start it, or stop it.
async fn on_pod(
    ctx: &Arc<Context>,
    config: &Config,
    pods: &Api<Pod>,
    running: &mut HashMap<String, Running>,
    pod: Pod,
) {
    let (Some(uid), Some(name), Some(ns)) = (
        pod.metadata.uid.clone(),
        pod.metadata.name.clone(),
        pod.metadata.namespace.clone(),
    ) else {
        return;
    };
    let Some(spec) = pod.spec.as_ref() else {
        return;
    };
    match spec.node_name.as_deref() {
        None => {
            let ours = spec
                .scheduler_name
                .as_deref()
                .is_none_or(|s| s == "default-scheduler");
            if ours && pod.metadata.deletion_timestamp.is_none() {
                bind(&ctx.client, &ns, &name, &uid, &config.node_name).await;
            }
            return;
        }
        Some(node) if node != config.node_name => return,
        Some(_) => {}
    }
    if pod.metadata.deletion_timestamp.is_some() {
        let grace = Duration::from_secs(
            pod.metadata
                .deletion_grace_period_seconds
                .unwrap_or(30)
                .max(0) as u64,
        );
        match running.get(&uid) {
            Some(r) if r.stop.borrow().is_none() => {
                tracing::info!(pod = %format!("{ns}/{name}"), grace_seconds = grace.as_secs(), "stopping pod");
                let _ = r.stop.send(Some(Stop {
                    grace,
                    delete_object: true,
                }));
            }
            Some(_) => {}
            None => {
                // Nothing runs for it (finished, or never started): the object can go now.
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                let api: Api<Pod> = Api::namespaced(pods.clone().into_client(), &ns);
                let _ = api.delete(&name, &dp).await;
            }
        }
        return;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if running.contains_key(&uid) || matches!(phase, Some("Succeeded" | "Failed")) {
        return;
    }
    let ip = ctx.allocate_ip();
    tracing::info!(pod = %format!("{ns}/{name}"), pod_ip = %ip, "starting pod");
    let (stop, stop_rx) = watch::channel(None);
    let task = tokio::spawn(pod::run(ctx.clone(), pod, ip, stop_rx));
    running.insert(uid, Running { stop, task });
}

async fn bind(client: &kube::Client, ns: &str, name: &str, uid: &str, node: &str) {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            uid: Some(uid.to_string()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    };
    let result: Result<serde_json::Value, _> = api
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await;
    match result {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), node, "pod bound"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot bind pod"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_are_distinct_loopback_addresses() {
        assert_eq!(pod_ip(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(pod_ip(253), Ipv4Addr::new(127, 1, 0, 254));
        assert_eq!(pod_ip(254), Ipv4Addr::new(127, 1, 1, 1));
        let ips: HashSet<_> = (0..2000).map(pod_ip).collect();
        assert_eq!(ips.len(), 2000);
        assert!(ips.iter().all(|ip| ip.is_loopback()));
    }
}
