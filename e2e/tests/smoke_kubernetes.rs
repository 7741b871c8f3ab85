//! The control plane and the process kubelet: a Deployment becomes a ReplicaSet and Pods (the
//! controller manager), the Pods run as local processes and turn Ready by their HTTP readiness
//! probe (the process kubelet), and deleting the Deployment garbage-collects everything,
//! processes included.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{TestNamespace, eventually, kube_client, pod_log};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);
/// The test image with busybox and kubectl (e2e/images/toolbox.Containerfile).
const TOOLBOX: &str = "localhost/kafkatable-e2e-toolbox:test";

fn web_deployment(replicas: i32) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "web",
                        "image": TOOLBOX,
                        "command": ["busybox", "httpd", "-f", "-p", "$(POD_IP):8080", "-h", "/srv/www"],
                        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
                        "volumeMounts": [{"name": "www", "mountPath": "/srv/www"}],
                    }],
                    "volumes": [{"name": "www", "configMap": {"name": "www"}}],
                },
            },
        },
    }))?)
}

fn process_alive(pid: u32) -> bool {
    // A zombie (state Z) has exited; only its exit status is left.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.split_whitespace()
            .nth(2)
            .is_some_and(|state| state != "Z")
    })
}

fn pid_of(pod: &Pod) -> Option<u32> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    status
        .container_id
        .as_deref()?
        .strip_prefix("process://")?
        .parse()
        .ok()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn deployment_pods_run_turn_ready_and_are_garbage_collected() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    let ns = TestNamespace::create(&env, &client, "smoke-k8s").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);

    let page: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "www"},
        "data": {"index.html": "served from a ConfigMap volume"},
    }))?;
    config_maps.create(&PostParams::default(), &page).await?;
    let deployment = deployments
        .create(&PostParams::default(), &web_deployment(2)?)
        .await?;
    let deployment_uid = deployment.metadata.uid.clone().unwrap_or_default();

    let rs = eventually(
        "the controller manager to create a ReplicaSet",
        TIMEOUT,
        || async {
            let list = replica_sets.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == deployment_uid && o.controller == Some(true))
            })
        },
    )
    .await;
    let rs_uid = rs.metadata.uid.clone().unwrap_or_default();

    let ready = eventually("two Ready pods", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
        (ready.len() == 2).then_some(ready)
    })
    .await;
    let http = reqwest::Client::new();
    let mut pids = Vec::new();
    for pod in &ready {
        assert!(
            pod.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == rs_uid),
            "pod owned by the ReplicaSet"
        );
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let body = http
            .get(format!("http://{ip}:8080/index.html"))
            .send()
            .await?
            .text()
            .await?;
        assert_eq!(
            body, "served from a ConfigMap volume",
            "pod {ip} serves its ConfigMap volume"
        );
        let pid = pid_of(pod).ok_or_else(|| anyhow::anyhow!("no process id in the pod status"))?;
        assert!(process_alive(pid), "pod process {pid} runs");
        pids.push(pid);
    }
    let ips: std::collections::BTreeSet<_> = ready
        .iter()
        .filter_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
        .collect();
    assert_eq!(ips.len(), 2, "each pod has its own IP");

    let ready_deployment = eventually(
        "the Deployment to report 2 ready replicas",
        TIMEOUT,
        || async {
            let d = deployments.get("web").await.ok()?;
            (d.status.as_ref()?.ready_replicas == Some(2)).then_some(d)
        },
    )
    .await;
    assert_eq!(
        ready_deployment.status.and_then(|s| s.available_replicas),
        Some(2)
    );

    deployments
        .delete("web", &DeleteParams::background())
        .await?;
    eventually(
        "garbage collection of the ReplicaSet and its pods",
        TIMEOUT,
        || async {
            let rs_left = replica_sets
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            let pods_left = pods.list(&ListParams::default()).await.ok()?.items.len();
            (rs_left == 0 && pods_left == 0).then_some(())
        },
    )
    .await;
    eventually(
        "the pod processes to exit",
        Duration::from_secs(20),
        || async { pids.iter().all(|pid| !process_alive(*pid)).then_some(()) },
    )
    .await;
    Ok(())
}

#[tokio::test]
async fn crashing_container_is_restarted_and_reports_its_exit_code() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    let ns = TestNamespace::create(&env, &client, "smoke-crash").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "crasher"},
        "spec": {
            "restartPolicy": "Always",
            "containers": [{"name": "main", "image": TOOLBOX, "command": ["sh", "-c", "exit 3"]}],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    // Between two runs (in back-off) the container waits and is not ready; while it runs, a
    // container without a readiness probe counts as ready, as in Kubernetes.
    let status = eventually(
        "two restarts with the exit code in lastState, waiting in back-off",
        TIMEOUT,
        || async {
            let p = pods.get("crasher").await.ok()?;
            let cs = p.status?.container_statuses?.into_iter().next()?;
            let code = cs.last_state.as_ref()?.terminated.as_ref()?.exit_code;
            let waiting = cs.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
            (cs.restart_count >= 2 && code == 3 && waiting == "CrashLoopBackOff").then_some(cs)
        },
    )
    .await;
    assert!(!status.ready);

    let missing: Pod = serde_json::from_value(json!({
        "metadata": {"name": "no-such-binary"},
        "spec": {"containers": [{"name": "main", "image": TOOLBOX, "command": ["kafkatable-does-not-exist"]}]},
    }))?;
    pods.create(&PostParams::default(), &missing).await?;
    eventually("a start error that names the program", TIMEOUT, || async {
        let p = pods.get("no-such-binary").await.ok()?;
        let cs = p.status?.container_statuses?.into_iter().next()?;
        let last = cs.last_state?.terminated?;
        (last.reason.as_deref() == Some("StartError")
            && last.exit_code == 128
            && last
                .message
                .as_deref()
                .is_some_and(|m| m.contains("kafkatable-does-not-exist")))
        .then_some(())
    })
    .await;

    let no_image: Pod = serde_json::from_value(json!({
        "metadata": {"name": "no-such-image"},
        "spec": {"containers": [{"name": "main", "image": "localhost/kafkatable-nope:1", "command": ["sh"]}]},
    }))?;
    pods.create(&PostParams::default(), &no_image).await?;
    eventually(
        "an image pull back-off that names the image",
        TIMEOUT,
        || async {
            let p = pods.get("no-such-image").await.ok()?;
            let cs = p.status?.container_statuses?.into_iter().next()?;
            let waiting = cs.state?.waiting?;
            (waiting.reason.as_deref() == Some("ImagePullBackOff")
                && waiting
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("localhost/kafkatable-nope:1")))
            .then_some(())
        },
    )
    .await;
    Ok(())
}

#[tokio::test]
async fn pods_reach_the_api_server_as_their_service_account() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    let ns = TestNamespace::create(&env, &client, "smoke-sa").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "whoami"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": TOOLBOX, "command": ["kubectl", "get", "secrets"]}],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    eventually("the pod to finish", TIMEOUT, || async {
        let phase = pods.get("whoami").await.ok()?.status?.phase?;
        (phase == "Failed" || phase == "Succeeded").then_some(())
    })
    .await;
    let log = pod_log(&env, &ns.name, "whoami", "main").unwrap_or_default();
    // The default service account may not list Secrets: RBAC names the pod's identity.
    let identity = format!("system:serviceaccount:{}:default", ns.name);
    assert!(
        log.contains("Forbidden") && log.contains(&identity),
        "expected a Forbidden for {identity}, got:\n{log}"
    );
    Ok(())
}
