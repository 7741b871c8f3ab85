//! Runs a container's process inside its image's root filesystem, the part of a container
//! runtime these machines allow (INFRA.md: no cgroups, no other namespaces than mounts): a
//! mount namespace of its own, an overlay over the unpacked image (a fresh writable layer per
//! start, read-only when `readOnlyRootFilesystem` says so), the pod's volumes bind-mounted at
//! their mount paths, `/proc`, a minimal `/dev`, the kubelet's `/etc/hosts`, then `chroot`, the
//! user and groups of the security context, and `execve` of the command.
//!
//! The process kubelet starts `process-kubelet run-in-rootfs <spec.json>`, which calls
//! [`enter`] before anything else runs in it.

use std::convert::Infallible;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{Gid, Uid, chdir, chroot, execve, setgid, setgroups, setuid};
use serde::{Deserialize, Serialize};

/// A volume, or a kubelet-managed file, bound into the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
}

/// Everything `enter` needs, written by the kubelet as JSON beside the pod's logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    /// The image's unpacked root filesystem (the overlay's lower layer; never written).
    pub rootfs: PathBuf,
    /// This container's writable layer and mount point; emptied at every start.
    pub state_dir: PathBuf,
    pub read_only_root: bool,
    pub mounts: Vec<BindMount>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub workdir: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Device nodes every container gets.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn io(what: &str, path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what} {}: {e}", path.display()))
}

/// Sets up the container's file system view and replaces this process with its command.
pub fn enter(s: &Sandbox) -> std::io::Result<Infallible> {
    let merged = prepare(s)?;
    chroot(&merged).map_err(|e| io("chroot", &merged, e))?;
    let workdir = Path::new(if s.workdir.is_empty() {
        "/"
    } else {
        &s.workdir
    });
    chdir(workdir).map_err(|e| io("chdir", workdir, e))?;
    let groups: Vec<Gid> = s.groups.iter().copied().map(Gid::from_raw).collect();
    setgroups(&groups).map_err(|e| io("setgroups", Path::new("/"), e))?;
    setgid(Gid::from_raw(s.gid)).map_err(|e| io("setgid", Path::new("/"), e))?;
    setuid(Uid::from_raw(s.uid)).map_err(|e| io("setuid", Path::new("/"), e))?;

    let argv0 = s
        .argv
        .first()
        .ok_or_else(|| std::io::Error::other("no command and no image entrypoint"))?;
    let path_env = s
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
    let program = find_program(argv0, path_env).ok_or_else(|| {
        std::io::Error::other(format!(
            "exec: {argv0:?}: executable file not found in $PATH ({path_env})"
        ))
    })?;
    let cstr = |v: &str| CString::new(v).map_err(std::io::Error::other);
    let program = cstr(&program.to_string_lossy())?;
    let argv = s
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = s
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    execve(&program, &argv, &env).map_err(|e| io("execve", Path::new(argv0), e))
}

/// A command's program as `execvp` finds it: a path as given, else the first `PATH` entry that
/// holds an executable file of that name.
fn find_program(argv0: &str, path_env: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if argv0.contains('/') {
        return Some(PathBuf::from(argv0));
    }
    path_env
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(argv0))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Builds the container's root: returns the directory to chroot into.
fn prepare(s: &Sandbox) -> std::io::Result<PathBuf> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| io("unshare", Path::new("/"), e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| io("make private", Path::new("/"), e))?;

    let _ = std::fs::remove_dir_all(&s.state_dir);
    let (upper, work, merged) = (
        s.state_dir.join("upper"),
        s.state_dir.join("work"),
        s.state_dir.join("merged"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).map_err(|e| io("create", d, e))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        s.rootfs.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| io("mount overlay on", &merged, e))?;

    let proc_dir = merged.join("proc");
    std::fs::create_dir_all(&proc_dir).map_err(|e| io("create", &proc_dir, e))?;
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        hardened,
        None::<&str>,
    )
    .map_err(|e| io("mount proc on", &proc_dir, e))?;
    minimal_dev(&merged.join("dev"))?;

    for m in &s.mounts {
        let target = merged.join(m.target.trim_start_matches('/'));
        bind(&m.source, &target, m.read_only)?;
    }
    if s.read_only_root {
        remount_read_only(&merged)?;
    }
    Ok(merged)
}

/// A tmpfs `/dev` with the usual device nodes bound from the host, `/dev/shm` and the fd links.
fn minimal_dev(dev: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dev).map_err(|e| io("create", dev, e))?;
    mount(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755,size=65536k"),
    )
    .map_err(|e| io("mount tmpfs on", dev, e))?;
    for name in DEVICES {
        bind(&Path::new("/dev").join(name), &dev.join(name), false)?;
    }
    let shm = dev.join("shm");
    std::fs::create_dir_all(&shm).map_err(|e| io("create", &shm, e))?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| io("mount tmpfs on", &shm, e))?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        std::os::unix::fs::symlink(to, &path).map_err(|e| io("symlink", &path, e))?;
    }
    Ok(())
}

/// Bind-mounts `source` (a directory or a file) at `target`, creating the mount point.
fn bind(source: &Path, target: &Path, read_only: bool) -> std::io::Result<()> {
    let is_dir = std::fs::metadata(source)
        .map_err(|e| io("stat", source, e))?
        .is_dir();
    if is_dir {
        std::fs::create_dir_all(target).map_err(|e| io("create", target, e))?;
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
        }
        if !target.exists() {
            std::fs::File::create(target).map_err(|e| io("create", target, e))?;
        }
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| io(&format!("bind {} on", source.display()), target, e))?;
    if read_only {
        remount_read_only(target)?;
    }
    Ok(())
}

fn remount_read_only(target: &Path) -> std::io::Result<()> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| io("remount read-only", target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_as_execvp_finds_them() {
        assert_eq!(
            find_program("/usr/local/bin/x", ""),
            Some(PathBuf::from("/usr/local/bin/x"))
        );
        let sh = find_program("sh", "/nonexistent:/bin:/usr/bin").expect("fixture");
        assert!(sh.ends_with("sh"));
        assert_eq!(find_program("no-such-program-kt", "/bin:/usr/bin"), None);
        // A directory of that name is no program.
        assert_eq!(find_program("tmp", "/"), None);
    }
}
