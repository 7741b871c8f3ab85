//! Pure translation of a Pod's container spec into what the process kubelet runs: the
//! program, its arguments, its environment and its working directory. No I/O here beyond
//! looking up the program on disk, so every rule has a unit test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, PodSecurityContext, Secret};

use super::image::RunConfig;

use super::KubeletError;

/// Where a container's volume mounts live on the host: mount path -> host directory.
pub type Mounts = Vec<(String, PathBuf)>;

/// Everything needed to start one container as a local process.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
    /// `image@sha256:...` when the container runs from an image, empty on the host fast path.
    pub image_id: String,
}

/// Values of the pod that `fieldRef` env vars and downward API volumes can read.
#[derive(Debug, Clone)]
pub struct PodFields {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node_name: String,
    pub service_account: String,
    pub pod_ip: String,
    pub host_ip: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl PodFields {
    pub fn new(pod: &Pod, pod_ip: &str) -> Self {
        let spec = pod.spec.as_ref();
        Self {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            node_name: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            service_account: spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
            pod_ip: pod_ip.to_string(),
            host_ip: "127.0.0.1".into(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        }
    }

    /// Resolves a downward API field path such as `metadata.name` or `metadata.labels['app']`.
    pub fn get(&self, path: &str) -> Option<String> {
        let map_key = |prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix("['"))
                .and_then(|rest| rest.strip_suffix("']"))
        };
        if let Some(key) = map_key("metadata.labels") {
            return self.labels.get(key).cloned();
        }
        if let Some(key) = map_key("metadata.annotations") {
            return self.annotations.get(key).cloned();
        }
        Some(match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            "metadata.uid" => self.uid.clone(),
            "spec.nodeName" => self.node_name.clone(),
            "spec.serviceAccountName" => self.service_account.clone(),
            "status.podIP" | "status.podIPs" => self.pod_ip.clone(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.clone(),
            _ => return None,
        })
    }
}

/// The ConfigMaps and Secrets of the pod's namespace that env vars refer to, fetched up front.
#[derive(Debug, Default)]
pub struct Refs {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
}

impl Refs {
    fn config_map_key(&self, name: &str, key: &str) -> Option<String> {
        self.config_maps.get(name)?.data.as_ref()?.get(key).cloned()
    }

    fn secret_key(&self, name: &str, key: &str) -> Option<String> {
        let bytes = self.secrets.get(name)?.data.as_ref()?.get(key)?;
        Some(String::from_utf8_lossy(&bytes.0).into_owned())
    }
}

/// Names of the ConfigMaps and Secrets that a pod's env, envFrom and volumes refer to.
pub fn referenced_objects(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return (cms, secrets);
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    for c in containers {
        for var in c.env.iter().flatten() {
            let Some(from) = var.value_from.as_ref() else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                secrets.push(r.name.clone());
            }
        }
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.push(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.push(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(s);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &src.config_map {
                cms.push(cm.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

/// Expands `$(VAR)` references as the kubelet does: known variables are substituted, `$$`
/// escapes a `$`, unknown references are kept as they are.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Maps a path inside the container onto the host: the longest mount path that prefixes it
/// wins; paths under no mount are returned unchanged.
pub fn map_path(path: &str, mounts: &Mounts) -> String {
    let best = mounts
        .iter()
        .filter(|(mount, _)| {
            path == mount
                || path
                    .strip_prefix(mount.as_str())
                    .is_some_and(|rest| rest.starts_with('/') || mount.ends_with('/'))
        })
        .max_by_key(|(mount, _)| mount.len());
    match best {
        Some((mount, host)) => {
            let rest = path[mount.len()..].trim_start_matches('/');
            if rest.is_empty() {
                host.display().to_string()
            } else {
                host.join(rest).display().to_string()
            }
        }
        None => path.to_string(),
    }
}

/// Rewrites every mount path that appears in a command-line argument or env value, whether
/// the value is a path (`/etc/app/config.yaml`) or carries one (`--config=/etc/app/x`).
pub fn map_paths_in(value: &str, mounts: &Mounts) -> String {
    if value.starts_with('/') {
        return map_path(value, mounts);
    }
    if let Some((flag, path)) = value.split_once('=')
        && path.starts_with('/')
    {
        return format!("{flag}={}", map_path(path, mounts));
    }
    value.to_string()
}

/// Finds the program for a container's `command[0]`: a binary of that base name in the
/// kubelet's bin dir (the locally built "image"), else the path itself, else a `PATH` lookup.
pub fn resolve_program(command0: &str, bin_dir: &Path, path_env: &str) -> Option<PathBuf> {
    let base = Path::new(command0).file_name()?;
    let local = bin_dir.join(base);
    if local.is_file() {
        return Some(local);
    }
    let direct = Path::new(command0);
    if command0.contains('/') {
        return direct.is_file().then(|| direct.to_path_buf());
    }
    std::env::split_paths(path_env)
        .map(|dir| dir.join(command0))
        .find(|candidate| candidate.is_file())
}

/// Resolves a container's environment: `envFrom` first, then `env` in order (later entries see
/// earlier ones through `$(VAR)`), as the kubelet does.
pub fn resolve_env(
    container: &Container,
    fields: &PodFields,
    refs: &Refs,
) -> Result<BTreeMap<String, String>, KubeletError> {
    let mut env = BTreeMap::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match refs.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        env.insert(format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(missing(container, "configMap", &r.name, None)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match refs.secrets.get(&r.name) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        env.insert(format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(missing(container, "secret", &r.name, None)),
            }
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = env_value(container, var, fields, refs, &env)? {
            env.insert(var.name.clone(), value);
        }
    }
    Ok(env)
}

fn env_value(
    container: &Container,
    var: &EnvVar,
    fields: &PodFields,
    refs: &Refs,
    so_far: &BTreeMap<String, String>,
) -> Result<Option<String>, KubeletError> {
    let Some(from) = &var.value_from else {
        return Ok(Some(expand(var.value.as_deref().unwrap_or(""), so_far)));
    };
    if let Some(f) = &from.field_ref {
        return fields
            .get(&f.field_path)
            .map(Some)
            .ok_or_else(|| KubeletError::Unsupported {
                container: container.name.clone(),
                what: format!("env {}: fieldRef {}", var.name, f.field_path),
            });
    }
    if let Some(r) = &from.config_map_key_ref {
        return match refs.config_map_key(&r.name, &r.key) {
            Some(v) => Ok(Some(v)),
            None if r.optional == Some(true) => Ok(None),
            None => Err(missing(container, "configMap", &r.name, Some(&r.key))),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        return match refs.secret_key(&r.name, &r.key) {
            Some(v) => Ok(Some(v)),
            None if r.optional == Some(true) => Ok(None),
            None => Err(missing(container, "secret", &r.name, Some(&r.key))),
        };
    }
    if from.resource_field_ref.is_some() {
        // No cgroups here: resource limits are not enforced, so there is nothing true to report.
        return Ok(None);
    }
    Ok(None)
}

fn missing(container: &Container, kind: &str, name: &str, key: Option<&str>) -> KubeletError {
    KubeletError::MissingReference {
        container: container.name.clone(),
        kind: kind.to_string(),
        name: name.to_string(),
        key: key.map(str::to_string),
    }
}

/// Builds the launch of one container: resolves env, expands and path-maps the command line.
pub fn launch(
    container: &Container,
    fields: &PodFields,
    refs: &Refs,
    mounts: &Mounts,
    bin_dir: &Path,
    pod_dir: &Path,
    base_env: &BTreeMap<String, String>,
) -> Result<Launch, KubeletError> {
    let resolved = resolve_env(container, fields, refs)?;
    let mut env = base_env.clone();
    for (k, v) in resolved {
        env.insert(k, map_paths_in(&v, mounts));
    }
    // Without a command, the image's entrypoint would run: on the host that is the binary
    // named like the image (`ghcr.io/kafkatable/kafkatable-ingester:0.1.0` runs
    // `kafkatable-ingester`).
    let entrypoint = match container.command.as_ref().filter(|c| !c.is_empty()) {
        Some(command) => command.clone(),
        None => vec![
            image_binary(container).ok_or_else(|| KubeletError::NoCommand {
                container: container.name.clone(),
            })?,
        ],
    };
    let mut argv: Vec<String> = entrypoint
        .iter()
        .chain(container.args.iter().flatten())
        .map(|a| map_paths_in(&expand(a, &env), mounts))
        .collect();
    let command0 = argv.remove(0);
    let path_env = env.get("PATH").cloned().unwrap_or_default();
    let program = resolve_program(&command0, bin_dir, &path_env).ok_or_else(|| {
        KubeletError::ProgramNotFound {
            container: container.name.clone(),
            program: command0.clone(),
            bin_dir: bin_dir.to_path_buf(),
        }
    })?;
    let workdir = match container.working_dir.as_deref() {
        Some(dir) => PathBuf::from(map_path(dir, mounts)),
        None => pod_dir.to_path_buf(),
    };
    Ok(Launch {
        program,
        args: argv,
        env,
        workdir,
        image_id: String::new(),
    })
}

/// The last path segment of a container's image reference, without tag or digest.
fn image_binary(container: &Container) -> Option<String> {
    let image = container.image.as_deref()?;
    let name = image.split('@').next()?.rsplit('/').next()?;
    let name = name.split(':').next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// The argv of a container run from an image, by Kubernetes' rules: a `command` replaces the
/// image's entrypoint and drops its cmd; `args` alone replace the cmd; neither runs the image's
/// entrypoint with its cmd. `$(VAR)` in the pod's command and args expands from `env`.
pub fn image_argv(
    container: &Container,
    image: &RunConfig,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    let given = |v: &Option<Vec<String>>| {
        v.as_ref()
            .filter(|v| !v.is_empty())
            .map(|v| v.iter().map(|a| expand(a, env)).collect::<Vec<_>>())
    };
    let image_part = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    match (given(&container.command), given(&container.args)) {
        (Some(mut command), args) => {
            command.extend(args.unwrap_or_default());
            command
        }
        (None, Some(args)) => {
            let mut argv = image_part(&image.entrypoint);
            argv.extend(args);
            argv
        }
        (None, None) => {
            let mut argv = image_part(&image.entrypoint);
            argv.extend(image_part(&image.cmd));
            argv
        }
    }
}

/// The user, group and supplementary groups a container runs as: the container's security
/// context over the pod's over the image's `User` (numeric, or a name looked up in the image's
/// `/etc/passwd`). With `runAsNonRoot`, root or a user that cannot be checked is refused, with
/// the kubelet's words.
pub fn run_as(
    container: &Container,
    pod: Option<&PodSecurityContext>,
    image_user: Option<&str>,
    passwd: &str,
) -> Result<(u32, u32, Vec<u32>), String> {
    let sc = container.security_context.as_ref();
    let users: Vec<(&str, u32, u32)> = passwd
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some((
                *f.first()?,
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect();
    // The image's user as (uid, gid), or the name that could not be resolved.
    let image = match image_user.filter(|u| !u.is_empty()) {
        None => Ok((0, 0)),
        Some(spec) => {
            let (user, group) = match spec.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (spec, None),
            };
            let found = match user.parse::<u32>() {
                Ok(uid) => Some(
                    users
                        .iter()
                        .find(|u| u.1 == uid)
                        .map_or((uid, 0), |u| (uid, u.2)),
                ),
                Err(_) => users.iter().find(|u| u.0 == user).map(|u| (u.1, u.2)),
            };
            match (found, group.map(str::parse::<u32>)) {
                (Some((uid, _)), Some(Ok(gid))) => Ok((uid, gid)),
                (Some(ids), _) => Ok(ids),
                (None, _) => Err(user.to_string()),
            }
        }
    };
    let non_root = sc
        .and_then(|c| c.run_as_non_root)
        .or(pod.and_then(|p| p.run_as_non_root))
        .unwrap_or(false);
    let uid = sc
        .and_then(|c| c.run_as_user)
        .or(pod.and_then(|p| p.run_as_user))
        .map(|u| u as u32);
    let uid = match (uid, &image) {
        (Some(uid), _) => uid,
        (None, Ok((uid, _))) => *uid,
        (None, Err(name)) if non_root => {
            return Err(format!(
                "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root"
            ));
        }
        (None, Err(name)) => return Err(format!("image user {name:?} is not in its /etc/passwd")),
    };
    if non_root && uid == 0 {
        return Err("container has runAsNonRoot and image will run as root".into());
    }
    let gid = sc
        .and_then(|c| c.run_as_group)
        .or(pod.and_then(|p| p.run_as_group))
        .map(|g| g as u32)
        .or(image.as_ref().ok().map(|(_, g)| *g))
        .unwrap_or(0);
    let mut groups: Vec<u32> = pod
        .into_iter()
        .flat_map(|p| {
            p.fs_group
                .into_iter()
                .chain(p.supplemental_groups.iter().flatten().copied())
        })
        .map(|g| g as u32)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Ok((uid, gid, groups))
}

/// A container's environment when it runs from an image: the image's `Env`, then what the
/// kubelet adds for every container (`HOSTNAME`, the API server as `KUBERNETES_SERVICE_*`),
/// then the container's own `envFrom` and `env`.
pub fn image_env(
    image: &RunConfig,
    kubelet: &BTreeMap<String, String>,
    container: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = image
        .env
        .iter()
        .flatten()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.extend(kubelet.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(container);
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapKeySelector, EnvFromSource, EnvVarSource, ObjectFieldSelector, SecretEnvSource,
        SecretKeySelector,
    };

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn fields() -> PodFields {
        PodFields {
            name: "web-1".into(),
            namespace: "ns".into(),
            uid: "u-1".into(),
            node_name: "node".into(),
            service_account: "default".into(),
            pod_ip: "127.1.0.7".into(),
            host_ip: "127.0.0.1".into(),
            labels: vars(&[("app", "web")]),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn expand_substitutes_known_and_keeps_unknown() {
        let v = vars(&[("POD_IP", "127.1.0.7"), ("PORT", "9090")]);
        assert_eq!(
            expand("--listen=$(POD_IP):$(PORT)", &v),
            "--listen=127.1.0.7:9090"
        );
        assert_eq!(expand("$(NOPE)-x", &v), "$(NOPE)-x");
        assert_eq!(expand("cost $$(POD_IP) $5", &v), "cost $(POD_IP) $5");
        assert_eq!(expand("open $(", &v), "open $(");
    }

    #[test]
    fn map_path_picks_the_longest_mount_and_respects_boundaries() {
        let mounts: Mounts = vec![
            ("/etc/app".into(), PathBuf::from("/run/p/vol-a")),
            ("/etc/app/tls".into(), PathBuf::from("/run/p/vol-b")),
        ];
        assert_eq!(
            map_path("/etc/app/config.yaml", &mounts),
            "/run/p/vol-a/config.yaml"
        );
        assert_eq!(
            map_path("/etc/app/tls/ca.crt", &mounts),
            "/run/p/vol-b/ca.crt"
        );
        assert_eq!(map_path("/etc/app", &mounts), "/run/p/vol-a");
        assert_eq!(map_path("/etc/application", &mounts), "/etc/application");
        assert_eq!(
            map_paths_in("--config=/etc/app/c.yaml", &mounts),
            "--config=/run/p/vol-a/c.yaml"
        );
        assert_eq!(map_paths_in("plain", &mounts), "plain");
    }

    #[test]
    fn field_paths_resolve_like_the_downward_api() {
        let f = fields();
        assert_eq!(f.get("status.podIP").as_deref(), Some("127.1.0.7"));
        assert_eq!(f.get("metadata.labels['app']").as_deref(), Some("web"));
        assert_eq!(f.get("metadata.labels['missing']"), None);
        assert_eq!(f.get("spec.unknown"), None);
    }

    #[test]
    fn env_resolves_refs_in_order_and_reports_missing_ones_by_name() {
        let mut refs = Refs::default();
        let cm = ConfigMap {
            data: Some(vars(&[("level", "debug")])),
            ..Default::default()
        };
        refs.config_maps.insert("cfg".into(), cm);
        let secret = Secret {
            data: Some([("password".to_string(), ByteString(b"s3cret".to_vec()))].into()),
            ..Default::default()
        };
        refs.secrets.insert("creds".into(), secret);

        let env_var = |name: &str, value: Option<&str>, from: Option<EnvVarSource>| EnvVar {
            name: name.into(),
            value: value.map(str::to_string),
            value_from: from,
        };
        let container = Container {
            name: "main".into(),
            env_from: Some(vec![EnvFromSource {
                prefix: Some("S_".into()),
                secret_ref: Some(SecretEnvSource {
                    name: "creds".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            env: Some(vec![
                env_var(
                    "POD_IP",
                    None,
                    Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }),
                ),
                env_var("ADDR", Some("$(POD_IP):8080"), None),
                env_var(
                    "LEVEL",
                    None,
                    Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cfg".into(),
                            key: "level".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                ),
            ]),
            ..Default::default()
        };
        let env = resolve_env(&container, &fields(), &refs).expect("env resolves");
        assert_eq!(env["ADDR"], "127.1.0.7:8080");
        assert_eq!(env["LEVEL"], "debug");
        assert_eq!(env["S_password"], "s3cret");

        let broken = Container {
            name: "main".into(),
            env: Some(vec![env_var(
                "TOKEN",
                None,
                Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "absent".into(),
                        key: "token".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }),
            )]),
            ..Default::default()
        };
        let err = resolve_env(&broken, &fields(), &refs).expect_err("missing secret");
        assert!(
            err.to_string().contains("secret \"absent\" key \"token\""),
            "{err}"
        );
    }

    #[test]
    fn programs_come_from_the_bin_dir_first() {
        let dir = std::env::temp_dir().join(format!("kt-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("kafkatable-ingester"), b"").expect("write");
        let found = resolve_program("/usr/local/bin/kafkatable-ingester", &dir, "/usr/bin:/bin");
        assert_eq!(found, Some(dir.join("kafkatable-ingester")));
        assert_eq!(
            resolve_program("sh", &dir, "/usr/bin:/bin").map(|p| p.is_file()),
            Some(true)
        );
        assert_eq!(resolve_program("/nonexistent/tool", &dir, "/usr/bin"), None);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> RunConfig {
        let list = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect());
        RunConfig {
            entrypoint: list(entrypoint),
            cmd: list(cmd),
            env: Some(vec!["PATH=/usr/local/bin".into(), "TZ=UTC".into()]),
            user: Some("65532:65532".into()),
            working_dir: None,
        }
    }

    fn strings(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn command_and_args_override_the_image_as_kubernetes_says() {
        let img = image(&["/usr/local/bin/app"], &["--help"]);
        let env = vars(&[("POD_IP", "127.1.0.7")]);
        let mut c = Container::default();
        assert_eq!(image_argv(&c, &img, &env), ["/usr/local/bin/app", "--help"]);
        c.args = strings(&["--listen=$(POD_IP)"]);
        assert_eq!(
            image_argv(&c, &img, &env),
            ["/usr/local/bin/app", "--listen=127.1.0.7"]
        );
        c.command = strings(&["other"]);
        assert_eq!(image_argv(&c, &img, &env), ["other", "--listen=127.1.0.7"]);
        c.args = None;
        assert_eq!(
            image_argv(&c, &img, &env),
            ["other"],
            "a command drops the image's cmd"
        );
    }

    #[test]
    fn the_user_comes_from_the_security_context_or_the_image_and_root_is_refused() {
        use k8s_openapi::api::core::v1::SecurityContext;
        let passwd =
            "root:x:0:0::/root:/sbin/nologin\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n";
        let c = Container::default();
        let pod = PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(2000),
            fs_group: Some(3000),
            ..Default::default()
        };
        assert_eq!(
            run_as(&c, Some(&pod), Some("65532:65532"), passwd),
            Ok((1000, 2000, vec![3000]))
        );
        assert_eq!(
            run_as(&c, None, Some("65532:65532"), passwd),
            Ok((65532, 65532, vec![]))
        );
        assert_eq!(
            run_as(&c, None, Some("nonroot"), passwd),
            Ok((65532, 65532, vec![]))
        );
        assert_eq!(run_as(&c, None, None, passwd), Ok((0, 0, vec![])));
        let non_root = PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        };
        assert_eq!(
            run_as(&c, Some(&non_root), None, passwd),
            Err("container has runAsNonRoot and image will run as root".into())
        );
        assert!(
            run_as(&c, Some(&non_root), Some("ghost"), passwd)
                .expect_err("refused")
                .contains("non-numeric user (ghost)")
        );
        let as_root = Container {
            security_context: Some(SecurityContext {
                run_as_user: Some(0),
                ..Default::default()
            }),
            ..Container::default()
        };
        assert!(run_as(&as_root, Some(&non_root), Some("65532"), passwd).is_err());
    }

    #[test]
    fn a_containers_env_is_the_images_then_the_kubelets_then_its_own() {
        let img = image(&[], &[]);
        let kubelet = vars(&[("HOSTNAME", "web-1"), ("TZ", "kubelet")]);
        let env = image_env(&img, &kubelet, vars(&[("TZ", "Europe/Paris")]));
        assert_eq!(env["PATH"], "/usr/local/bin");
        assert_eq!(env["HOSTNAME"], "web-1");
        assert_eq!(env["TZ"], "Europe/Paris");
    }

    #[test]
    fn the_host_fast_path_runs_the_binary_named_like_the_image() {
        let bin = std::env::temp_dir().join(format!("kt-bin-{}", std::process::id()));
        std::fs::create_dir_all(&bin).expect("fixture");
        std::fs::write(bin.join("kafkatable-ingester"), b"").expect("fixture");
        let c = Container {
            name: "ingester".into(),
            image: Some("ghcr.io/kafkatable/kafkatable-ingester:0.1.0".into()),
            args: strings(&["run", "-f", "/etc/kafkatable/ingester.json"]),
            ..Container::default()
        };
        let mounts: Mounts = vec![("/etc/kafkatable".into(), PathBuf::from("/run/p/config"))];
        let l = launch(
            &c,
            &fields(),
            &Refs::default(),
            &mounts,
            &bin,
            Path::new("/run/p"),
            &BTreeMap::new(),
        )
        .expect("launch");
        assert_eq!(l.program, bin.join("kafkatable-ingester"));
        assert_eq!(l.args, ["run", "-f", "/run/p/config/ingester.json"]);
        let no_image = Container {
            name: "x".into(),
            ..Container::default()
        };
        assert!(matches!(
            launch(
                &no_image,
                &fields(),
                &Refs::default(),
                &Mounts::new(),
                &bin,
                Path::new("/"),
                &BTreeMap::new()
            ),
            Err(KubeletError::NoCommand { .. })
        ));
        std::fs::remove_dir_all(&bin).expect("cleanup");
    }
}
