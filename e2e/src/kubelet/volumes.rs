//! Materialises a pod's volumes as directories under the pod's directory, so that the process
//! finds its ConfigMaps, Secrets and service-account token where the spec mounts them (paths
//! are mapped by `spec::map_path`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Container, KeyToPath, Pod, PodSpec, ServiceAccount, ServiceAccountTokenProjection, Volume,
};
use kube::api::{Api, PostParams};

use super::KubeletError;
use super::sandbox::BindMount;
use super::spec::{Mounts, PodFields, Refs};

/// The mount path of the service-account token in every pod that automounts one.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// What the pod needs to reach the API server as its service account.
pub struct ApiAccess<'a> {
    pub client: &'a kube::Client,
    pub server: &'a str,
    pub ca_file: &'a Path,
}

/// Writes every volume of the pod under `pod_dir/volumes/<name>` and returns the host dir of
/// each volume by name.
pub async fn materialize(
    pod: &Pod,
    fields: &PodFields,
    refs: &Refs,
    pod_dir: &Path,
    api: &ApiAccess<'_>,
) -> Result<BTreeMap<String, PathBuf>, KubeletError> {
    let mut dirs = BTreeMap::new();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(dirs);
    };
    for volume in spec.volumes.iter().flatten() {
        let dir = match &volume.host_path {
            Some(host) => PathBuf::from(&host.path),
            None => pod_dir.join("volumes").join(&volume.name),
        };
        std::fs::create_dir_all(&dir).map_err(|e| KubeletError::io(&dir, e))?;
        if volume.empty_dir.is_some() {
            // As the kubelet makes them: writable by whatever user the containers run as.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| KubeletError::io(&dir, e))?;
        }
        write_volume(volume, &dir, pod, fields, refs, api).await?;
        dirs.insert(volume.name.clone(), dir);
    }
    Ok(dirs)
}

async fn write_volume(
    volume: &Volume,
    dir: &Path,
    pod: &Pod,
    fields: &PodFields,
    refs: &Refs,
    api: &ApiAccess<'_>,
) -> Result<(), KubeletError> {
    if let Some(cm) = &volume.config_map {
        write_config_map(refs, &cm.name, cm.items.as_deref(), cm.optional, dir)?;
    }
    if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        write_secret(refs, &name, secret.items.as_deref(), secret.optional, dir)?;
    }
    if let Some(downward) = &volume.downward_api {
        for item in downward.items.iter().flatten() {
            if let Some(f) = &item.field_ref {
                write_file(
                    dir,
                    &item.path,
                    fields.get(&f.field_path).unwrap_or_default().as_bytes(),
                )?;
            }
        }
    }
    for source in volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
    {
        if let Some(cm) = &source.config_map {
            write_config_map(refs, &cm.name, cm.items.as_deref(), cm.optional, dir)?;
        }
        if let Some(secret) = &source.secret {
            write_secret(
                refs,
                &secret.name,
                secret.items.as_deref(),
                secret.optional,
                dir,
            )?;
        }
        if let Some(downward) = &source.downward_api {
            for item in downward.items.iter().flatten() {
                if let Some(f) = &item.field_ref {
                    let value = fields.get(&f.field_path).unwrap_or_default();
                    write_file(dir, &item.path, value.as_bytes())?;
                }
            }
        }
        if let Some(token) = &source.service_account_token {
            let jwt = request_token(pod, fields, token, api).await?;
            write_file(dir, &token.path, jwt.as_bytes())?;
        }
    }
    Ok(())
}

fn write_config_map(
    refs: &Refs,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    dir: &Path,
) -> Result<(), KubeletError> {
    let Some(cm) = refs.config_maps.get(name) else {
        return if optional == Some(true) {
            Ok(())
        } else {
            Err(KubeletError::MissingReference {
                container: "volume".into(),
                kind: "configMap".into(),
                name: name.into(),
                key: None,
            })
        };
    };
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        files.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        files.insert(k.clone(), v.0.clone());
    }
    write_selected(files, items, dir)
}

fn write_secret(
    refs: &Refs,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    dir: &Path,
) -> Result<(), KubeletError> {
    let Some(secret) = refs.secrets.get(name) else {
        return if optional == Some(true) {
            Ok(())
        } else {
            Err(KubeletError::MissingReference {
                container: "volume".into(),
                kind: "secret".into(),
                name: name.into(),
                key: None,
            })
        };
    };
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in secret.data.iter().flatten() {
        files.insert(k.clone(), v.0.clone());
    }
    for (k, v) in secret.string_data.iter().flatten() {
        files.insert(k.clone(), v.clone().into_bytes());
    }
    write_selected(files, items, dir)
}

/// Writes all keys, or only the listed items under their paths.
fn write_selected(
    files: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    dir: &Path,
) -> Result<(), KubeletError> {
    match items {
        Some(items) => {
            for item in items {
                if let Some(content) = files.get(&item.key) {
                    write_file(dir, &item.path, content)?;
                }
            }
        }
        None => {
            for (key, content) in &files {
                write_file(dir, key, content)?;
            }
        }
    }
    Ok(())
}

fn write_file(dir: &Path, rel: &str, content: &[u8]) -> Result<(), KubeletError> {
    let path = dir.join(rel.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| KubeletError::io(parent, e))?;
    }
    std::fs::write(&path, content).map_err(|e| KubeletError::io(&path, e))
}

/// Asks the API server for a token of the pod's service account, bound to the pod, as the
/// real kubelet does for projected `serviceAccountToken` sources.
async fn request_token(
    pod: &Pod,
    fields: &PodFields,
    projection: &ServiceAccountTokenProjection,
    api: &ApiAccess<'_>,
) -> Result<String, KubeletError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(api.client.clone(), &fields.namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: projection.audience.iter().cloned().collect(),
            expiration_seconds: Some(projection.expiration_seconds.unwrap_or(24 * 3600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..Default::default()
    };
    let response: TokenRequest = accounts
        .create_subresource(
            "token",
            &fields.service_account,
            &PostParams::default(),
            &request,
        )
        .await
        .map_err(|source| KubeletError::Api {
            action: "request a service-account token",
            source,
        })?;
    response
        .status
        .map(|s| s.token)
        .ok_or(KubeletError::Unsupported {
            container: "volume".into(),
            what: "empty TokenRequest".into(),
        })
}

/// Pairs a container's volume mounts with the volumes' host directories (the host fast path,
/// which rewrites mount paths instead of mounting).
pub fn mounts_for(
    container: &Container,
    spec: &PodSpec,
    dirs: &BTreeMap<String, PathBuf>,
) -> Mounts {
    bind_mounts(container, spec, dirs)
        .into_iter()
        .map(|m| (m.target, m.source))
        .collect()
}

/// A container's volume mounts as bind mounts into its root filesystem. Secret, ConfigMap,
/// downward API and projected volumes are read-only whatever the mount says, as in Kubernetes.
pub fn bind_mounts(
    container: &Container,
    spec: &PodSpec,
    dirs: &BTreeMap<String, PathBuf>,
) -> Vec<BindMount> {
    let always_read_only = |name: &str| {
        spec.volumes.iter().flatten().any(|v| {
            v.name == name
                && (v.secret.is_some()
                    || v.config_map.is_some()
                    || v.downward_api.is_some()
                    || v.projected.is_some())
        })
    };
    container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let dir = dirs.get(&m.name)?;
            let source = match m.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => dir.join(sub),
                _ => dir.clone(),
            };
            Some(BindMount {
                source,
                target: m.mount_path.clone(),
                read_only: m.read_only == Some(true) || always_read_only(&m.name),
            })
        })
        .collect()
}

/// Writes a kubeconfig that lets the process talk to the API server as the pod's service
/// account (processes cannot see the fixed in-cluster token path, so they get `KUBECONFIG`).
pub fn write_kubeconfig(
    pod_dir: &Path,
    token_dir: &Path,
    namespace: &str,
    api: &ApiAccess<'_>,
) -> Result<PathBuf, KubeletError> {
    let path = pod_dir.join("kubeconfig");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "in-cluster", "cluster": {
            "server": api.server,
            "certificate-authority": api.ca_file.display().to_string(),
        }}],
        "users": [{"name": "service-account", "user": {
            "tokenFile": token_dir.join("token").display().to_string(),
        }}],
        "contexts": [{"name": "in-cluster", "context": {
            "cluster": "in-cluster", "user": "service-account", "namespace": namespace,
        }}],
        "current-context": "in-cluster",
    });
    let text = serde_json::to_string_pretty(&config).map_err(KubeletError::Json)?;
    std::fs::write(&path, text).map_err(|e| KubeletError::io(&path, e))?;
    Ok(path)
}
