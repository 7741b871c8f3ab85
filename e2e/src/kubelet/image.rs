//! The process kubelet's image store: OCI archives (what `make images` writes and `skopeo copy`
//! or `podman load` read) in one directory, looked up by the reference a pod names, each
//! unpacked once per manifest digest into a root filesystem that containers run in.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;

use super::KubeletError;

/// The annotation that names an image inside an OCI layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What an image's config says about running it (the `config` object of the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// An image ready to run: its digest, its unpacked root filesystem and its run config.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:...` of the manifest, as `imageID` reports it.
    pub digest: String,
    pub rootfs: PathBuf,
    pub config: RunConfig,
}

/// Why an image reference cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {reference:?} not found in {} (run `make images`, or build the test images)", dir.display())]
    NotFound { reference: String, dir: PathBuf },
    #[error("image archive {}: {what}", path.display())]
    Bad { path: PathBuf, what: String },
}

/// A reference an archive's index names, with its manifest digest.
type Named = (String, String);

/// OCI archives in one directory, and the cache their root filesystems are unpacked into.
pub struct ImageStore {
    dir: PathBuf,
    cache: PathBuf,
    /// Archive path -> (modified time, the references it holds with their manifest digests).
    indexes: Mutex<BTreeMap<PathBuf, (SystemTime, Vec<Named>)>>,
    /// Serialises unpacking, so that two pods of one new image unpack it once.
    unpacking: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: RunConfig,
}

impl ImageStore {
    pub fn new(dir: PathBuf, cache: PathBuf) -> Self {
        Self {
            dir,
            cache,
            indexes: Mutex::new(BTreeMap::new()),
            unpacking: tokio::sync::Mutex::new(()),
        }
    }

    /// Finds `reference` among the archives and returns it unpacked (unpacking it the first
    /// time its digest is seen). Archives are re-read when they change, so rebuilding an image
    /// takes effect at the next container start, as a re-pull would.
    pub async fn resolve(&self, reference: &str) -> Result<Image, KubeletError> {
        let wanted = normalize(reference);
        let (archive, digest) = self.find(&wanted)?.ok_or_else(|| ImageError::NotFound {
            reference: reference.to_string(),
            dir: self.dir.clone(),
        })?;
        let hex = digest.trim_start_matches("sha256:").to_string();
        let rootfs = self.cache.join(&hex).join("rootfs");
        let config_path = self.cache.join(&hex).join("config.json");
        let _guard = self.unpacking.lock().await;
        if !config_path.is_file() {
            let (cache, archive, digest) = (self.cache.clone(), archive.clone(), digest.clone());
            tokio::task::spawn_blocking(move || unpack(&archive, &digest, &cache))
                .await
                .map_err(|e| bad(&self.dir, format!("unpack task: {e}")))??;
        }
        let text = std::fs::read(&config_path).map_err(|e| KubeletError::io(&config_path, e))?;
        let config: RunConfig = serde_json::from_slice(&text).map_err(KubeletError::Json)?;
        Ok(Image {
            digest,
            rootfs,
            config,
        })
    }

    /// Removes unpacked root filesystems that no archive names any more (an image rebuilt with
    /// new binaries leaves its old digest behind). Called at start, before any container runs.
    pub fn prune(&self) -> Result<(), KubeletError> {
        let mut keep = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tar") {
                for (_, digest) in read_index(&path)? {
                    keep.insert(digest.trim_start_matches("sha256:").to_string());
                }
            }
        }
        for entry in std::fs::read_dir(&self.cache)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                tracing::info!(dir = %entry.path().display(), "removing an unused image root");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// The archive holding `reference` and the manifest digest it names.
    fn find(&self, reference: &str) -> Result<Option<(PathBuf, String)>, KubeletError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| KubeletError::io(&self.dir, e))?;
        let mut indexes = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "tar") {
                continue;
            }
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(|e| KubeletError::io(&path, e))?;
            let stale = indexes.get(&path).is_none_or(|(m, _)| *m != modified);
            if stale {
                let refs = read_index(&path)?;
                indexes.insert(path.clone(), (modified, refs));
            }
            if let Some((_, digest)) = indexes[&path].1.iter().find(|(r, _)| r == reference) {
                return Ok(Some((path, digest.clone())));
            }
        }
        Ok(None)
    }
}

/// `name` -> `docker.io/library/name:latest`, `name:tag` kept with its registry, as a
/// container runtime normalises a reference before looking it up.
pub fn normalize(reference: &str) -> String {
    let (name, tag) = match reference.rsplit_once('@') {
        Some(_) => (reference.to_string(), None),
        None => match reference.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n.to_string(), Some(t.to_string())),
            _ => (reference.to_string(), None),
        },
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let name = if has_registry {
        name
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    if reference.contains('@') {
        name
    } else {
        format!("{name}:{}", tag.unwrap_or_else(|| "latest".into()))
    }
}

fn bad(path: &Path, what: impl Into<String>) -> KubeletError {
    KubeletError::Image(ImageError::Bad {
        path: path.to_path_buf(),
        what: what.into(),
    })
}

/// The references an archive's `index.json` names, each with its manifest digest.
fn read_index(path: &Path) -> Result<Vec<(String, String)>, KubeletError> {
    let members = Members::scan(path)?;
    let index: Index = serde_json::from_slice(&members.read(path, "index.json")?)
        .map_err(|e| bad(path, format!("index.json: {e}")))?;
    Ok(index
        .manifests
        .into_iter()
        .filter_map(|m| {
            let name = m.annotations.get(REF_NAME)?;
            Some((normalize(name), m.digest))
        })
        .collect())
}

/// Where each member of a tar archive starts and how long it is, so that blobs are read by
/// seeking instead of unpacking the whole archive.
struct Members(BTreeMap<String, (u64, u64)>);

impl Members {
    fn scan(path: &Path) -> Result<Self, KubeletError> {
        let file = File::open(path).map_err(|e| KubeletError::io(path, e))?;
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut members = BTreeMap::new();
        let entries = archive
            .entries_with_seek()
            .map_err(|e| KubeletError::io(path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| KubeletError::io(path, e))?;
            let name = entry
                .path()
                .map_err(|e| KubeletError::io(path, e))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(Self(members))
    }

    fn open(
        &self,
        path: &Path,
        name: &str,
    ) -> Result<std::io::Take<BufReader<File>>, KubeletError> {
        let (start, size) = *self
            .0
            .get(name)
            .ok_or_else(|| bad(path, format!("no member {name}")))?;
        let mut file = File::open(path).map_err(|e| KubeletError::io(path, e))?;
        file.seek(SeekFrom::Start(start))
            .map_err(|e| KubeletError::io(path, e))?;
        Ok(BufReader::new(file).take(size))
    }

    fn read(&self, path: &Path, name: &str) -> Result<Vec<u8>, KubeletError> {
        let mut bytes = Vec::new();
        self.open(path, name)?
            .read_to_end(&mut bytes)
            .map_err(|e| KubeletError::io(path, e))?;
        Ok(bytes)
    }

    fn blob(digest: &str) -> String {
        format!("blobs/{}", digest.replacen(':', "/", 1))
    }
}

/// Unpacks the image with manifest `digest` from `archive` into `cache/<hex>/rootfs`, applying
/// its layers in order (whiteouts included), and writes its run config beside it. The directory
/// appears complete or not at all.
fn unpack(archive: &Path, digest: &str, cache: &Path) -> Result<(), KubeletError> {
    let members = Members::scan(archive)?;
    let manifest: Manifest =
        serde_json::from_slice(&members.read(archive, &Members::blob(digest))?)
            .map_err(|e| bad(archive, format!("manifest {digest}: {e}")))?;
    let config: ImageConfig =
        serde_json::from_slice(&members.read(archive, &Members::blob(&manifest.config.digest))?)
            .map_err(|e| bad(archive, format!("config: {e}")))?;
    let hex = digest.trim_start_matches("sha256:");
    let staging = cache.join(format!(".{hex}.partial"));
    let _ = std::fs::remove_dir_all(&staging);
    let rootfs = staging.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| KubeletError::io(&rootfs, e))?;
    for layer in &manifest.layers {
        let reader = members.open(archive, &Members::blob(&layer.digest))?;
        let reader: Box<dyn Read> = if layer.media_type.ends_with("gzip") {
            Box::new(flate2::read::GzDecoder::new(reader))
        } else if layer.media_type.ends_with("tar") {
            Box::new(reader)
        } else {
            return Err(bad(
                archive,
                format!("layer media type {} not supported", layer.media_type),
            ));
        };
        apply_layer(reader, &rootfs).map_err(|e| KubeletError::io(archive, e))?;
    }
    let run = serde_json::to_vec(&config.config).map_err(KubeletError::Json)?;
    let config_path = staging.join("config.json");
    std::fs::write(&config_path, run).map_err(|e| KubeletError::io(&config_path, e))?;
    let done = cache.join(hex);
    let _ = std::fs::remove_dir_all(&done);
    std::fs::rename(&staging, &done).map_err(|e| KubeletError::io(&done, e))?;
    tracing::info!(image = digest, rootfs = %done.join("rootfs").display(), "image unpacked");
    Ok(())
}

/// Applies one layer onto `root`: `.wh.<name>` removes `<name>` from the layers below,
/// `.wh..wh..opq` empties its directory, everything else is unpacked with its owner and mode.
pub fn apply_layer(reader: impl Read, root: &Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(false);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            entry.unpack_in(root)?;
            continue;
        };
        let parent = root.join(path.parent().unwrap_or(Path::new("")));
        if name == ".wh..wh..opq" {
            for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                remove(&child.path())?;
            }
        } else if let Some(hidden) = name.strip_prefix(".wh.") {
            remove(&parent.join(hidden))?;
        } else {
            entry.unpack_in(root)?;
        }
    }
    Ok(())
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalised_as_a_runtime_does() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("me/app:1"), "docker.io/me/app:1");
        assert_eq!(
            normalize("ghcr.io/kafkatable/kafkatable-ingester:0.1.0"),
            "ghcr.io/kafkatable/kafkatable-ingester:0.1.0"
        );
        assert_eq!(normalize("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(normalize("ghcr.io/a/b@sha256:00"), "ghcr.io/a/b@sha256:00");
    }

    fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match content {
                Some(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(bytes.len() as u64);
                    header.set_mode(0o644);
                    builder
                        .append_data(&mut header, path, *bytes)
                        .expect("fixture");
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    builder
                        .append_data(&mut header, path, &[][..])
                        .expect("fixture");
                }
            }
        }
        builder.into_inner().expect("fixture")
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let dir = std::env::temp_dir().join(format!("kt-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture");
        let base = layer(&[
            ("etc/", None),
            ("etc/a", Some(b"a")),
            ("etc/b", Some(b"b")),
            ("opt/", None),
            ("opt/x", Some(b"x")),
        ]);
        let top = layer(&[
            ("etc/.wh.a", Some(b"")),
            ("etc/b", Some(b"b2")),
            ("opt/.wh..wh..opq", Some(b"")),
            ("opt/y", Some(b"y")),
        ]);
        apply_layer(&base[..], &dir).expect("fixture");
        apply_layer(&top[..], &dir).expect("fixture");
        assert!(!dir.join("etc/a").exists(), "whiteout removes a file");
        assert_eq!(std::fs::read(dir.join("etc/b")).expect("fixture"), b"b2");
        assert!(!dir.join("opt/x").exists(), "opaque whiteout empties a dir");
        assert_eq!(std::fs::read(dir.join("opt/y")).expect("fixture"), b"y");
        assert!(!dir.join("opt/.wh..wh..opq").exists());
        std::fs::remove_dir_all(&dir).expect("fixture");
    }
}
