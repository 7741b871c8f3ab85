//! Registers the Node and keeps it Ready: node status and the node Lease are renewed on a
//! steady beat, so the node lifecycle controller never taints or evicts it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::KubeletError;

/// How often the node status and Lease are renewed (the real kubelet's Lease default: 10 s).
pub const HEARTBEAT: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;
const MANAGER: &str = "process-kubelet";

/// Creates or updates the Node object, then writes its status.
pub async fn register(
    client: &kube::Client,
    name: &str,
    since: Timestamp,
) -> Result<(), KubeletError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kafkatable.io/process-kubelet": "true",
            },
        },
    });
    nodes
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&node),
        )
        .await
        .map_err(|source| KubeletError::Api {
            action: "register the node",
            source,
        })?;
    heartbeat(client, name, since).await
}

/// Renews the node's Ready condition and its Lease. `since` is when this kubelet came up: the
/// conditions have not changed since then.
pub async fn heartbeat(
    client: &kube::Client,
    name: &str,
    since: Timestamp,
) -> Result<(), KubeletError> {
    let now = Timestamp::now().to_string();
    let since = since.to_string();
    let nodes: Api<Node> = Api::all(client.clone());
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": since,
        })
    };
    let capacity =
        json!({"cpu": "64", "memory": "256Gi", "pods": "1000", "ephemeral-storage": "100Gi"});
    let status = json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
                condition("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                "osImage": "process-kubelet", "containerRuntimeVersion": "process://1",
                "kubeletVersion": "v1.34.1", "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
    });
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|source| KubeletError::Api {
            action: "write node status",
            source,
        })?;

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        },
    });
    leases
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await
        .map_err(|source| KubeletError::Api {
            action: "renew the node lease",
            source,
        })?;
    Ok(())
}
