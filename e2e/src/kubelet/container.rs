//! Supervises one container as a process group: start, probe, restart with back-off by the
//! pod's restart policy, and stop with a grace period.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

use super::probe::{self, Timing, Verdict};
use super::spec::Launch;

/// When a container's process is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(policy: Option<&str>) -> Self {
        match policy {
            Some("Never") => Self::Never,
            Some("OnFailure") => Self::OnFailure,
            _ => Self::Always,
        }
    }

    fn restarts_after(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// Why and how a pod's containers are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Whether the kubelet deletes the Pod object once its processes are gone (the pod was
    /// deleted gracefully); false when the object is already gone or the kubelet shuts down.
    pub delete_object: bool,
}

/// A finished run of a container's process.
#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    /// The termination message (with `terminationMessagePolicy: FallbackToLogsOnError`, the
    /// log's tail when the process failed).
    pub message: Option<String>,
}

/// The state of a container, as reported in the pod's status.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting { reason: String, message: String },
    Running { started_at: Timestamp, pid: u32 },
    Terminated(Terminated),
}

/// What a container task tells its pod after every change.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub state: State,
    pub ready: bool,
    pub restart_count: i32,
    pub last_terminated: Option<Terminated>,
}

/// The first restart waits this long, doubling up to `MAX_BACKOFF` (the real kubelet starts at
/// 10 s; tests want crash loops to be visible quickly).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long resets the back-off.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

/// Everything a container task needs, moved into it.
pub struct Supervised {
    pub index: usize,
    pub container: Container,
    pub launch: Launch,
    pub policy: RestartPolicy,
    pub pod_ip: String,
    pub log_path: PathBuf,
    pub reports: mpsc::UnboundedSender<(usize, Report)>,
    pub stop: watch::Receiver<Option<Stop>>,
}

enum Exit {
    /// The process exited (or was killed for failing its liveness probe).
    Exited { code: i32, reason: &'static str },
    /// The pod is being stopped; the process is gone.
    Stopped { code: i32 },
}

/// Runs the container until it completes for good or the pod stops. Returns the last exit code.
pub async fn supervise(mut s: Supervised) -> i32 {
    let mut restart_count = 0;
    let mut last_terminated: Option<Terminated> = None;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if s.stop.borrow().is_some() {
            return last_terminated.map_or(0, |t| t.exit_code);
        }
        let started_at = Timestamp::now();
        let started = Instant::now();
        let (code, reason) = match spawn(&s.launch, &s.log_path) {
            Ok(child) => {
                let pid = child.id().unwrap_or_default();
                let ready = s.container.readiness_probe.is_none();
                send(
                    &s,
                    State::Running { started_at, pid },
                    ready,
                    restart_count,
                    &last_terminated,
                );
                match run(
                    &mut s,
                    child,
                    started_at,
                    pid,
                    restart_count,
                    &last_terminated,
                )
                .await
                {
                    Exit::Stopped { code } => {
                        let t = terminated(code, started_at);
                        send(
                            &s,
                            State::Terminated(t),
                            false,
                            restart_count,
                            &last_terminated,
                        );
                        return code;
                    }
                    Exit::Exited { code, reason } => (code, reason),
                }
            }
            Err(e) => {
                tracing::warn!(container = %s.container.name, error = %e, "cannot start process");
                append_log(
                    &s.log_path,
                    &format!("process-kubelet: cannot start: {e}\n"),
                );
                (128, "StartError")
            }
        };
        let mut t = terminated(code, started_at);
        t.reason = reason.into();
        if let Some(message) = start_error(code, &s.log_path) {
            t.reason = "StartError".into();
            t.message = Some(message);
        } else if code != 0
            && s.container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
        {
            t.message = log_tail(&s.log_path);
        }
        tracing::info!(container = %s.container.name, exit_code = code, reason, "container exited");
        if !s.policy.restarts_after(code) {
            send(
                &s,
                State::Terminated(t.clone()),
                false,
                restart_count,
                &last_terminated,
            );
            return code;
        }
        last_terminated = Some(t);
        if started.elapsed() >= BACKOFF_RESET_AFTER {
            backoff = FIRST_BACKOFF;
        }
        let waiting = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: format!(
                "back-off {}s restarting failed container",
                backoff.as_secs()
            ),
        };
        send(&s, waiting, false, restart_count, &last_terminated);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = s.stop.changed() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        restart_count += 1;
    }
}

/// A container whose process never became the command (`run-in-rootfs` could not set up its
/// root or find its program) exits 128 after one line in its log; a runtime reports that as a
/// `StartError` with the line as the message.
fn start_error(code: i32, log: &PathBuf) -> Option<String> {
    if code != 128 {
        return None;
    }
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().last()?;
    line.strip_prefix(START_ERROR_PREFIX).map(str::to_string)
}

/// What `process-kubelet run-in-rootfs` prints before it exits 128.
pub const START_ERROR_PREFIX: &str = "process-kubelet: cannot start container: ";

/// The end of a log as Kubernetes takes it for a termination message: at most 80 lines and
/// 2 KiB.
fn log_tail(path: &PathBuf) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let start = tail.len().saturating_sub(2048);
    let start = (start..tail.len())
        .find(|i| tail.is_char_boundary(*i))
        .unwrap_or(tail.len());
    Some(tail[start..].to_string()).filter(|t| !t.is_empty())
}

fn terminated(code: i32, started_at: Timestamp) -> Terminated {
    Terminated {
        exit_code: code,
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        started_at,
        finished_at: Timestamp::now(),
        message: None,
    }
}

fn send(s: &Supervised, state: State, ready: bool, restart_count: i32, last: &Option<Terminated>) {
    let report = Report {
        state,
        ready,
        restart_count,
        last_terminated: last.clone(),
    };
    // The pod task outlives its containers; a closed channel means it is shutting down anyway.
    let _ = s.reports.send((s.index, report));
}

fn spawn(launch: &Launch, log_path: &PathBuf) -> std::io::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    let err = log.try_clone()?;
    tokio::process::Command::new(&launch.program)
        .args(&launch.args)
        .env_clear()
        .envs(&launch.env)
        .current_dir(&launch.workdir)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

fn append_log(path: &PathBuf, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|sig| 128 + sig))
            .unwrap_or(255),
        Err(_) => 255,
    }
}

/// Sends `signal` to the container's whole process group.
fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH means the group is already gone, which is what we want.
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// SIGTERM, then SIGKILL after the grace period.
async fn terminate(child: &mut Child, pid: u32, grace: Duration) -> i32 {
    signal_group(pid, Signal::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            signal_group(pid, Signal::SIGKILL);
            exit_code(status)
        }
        Err(_) => {
            signal_group(pid, Signal::SIGKILL);
            exit_code(child.wait().await)
        }
    }
}

async fn run(
    s: &mut Supervised,
    mut child: Child,
    started_at: Timestamp,
    pid: u32,
    restart_count: i32,
    last: &Option<Terminated>,
) -> Exit {
    let readiness = s.container.readiness_probe.clone().map(|p| {
        let t = Timing::of(&p);
        (p, t)
    });
    let liveness = s.container.liveness_probe.clone().map(|p| {
        let t = Timing::of(&p);
        (p, t)
    });
    let mut ready = Verdict::new(readiness.is_none());
    let mut live = Verdict::new(true);
    let ticker = |timing: Option<Timing>| {
        let timing = timing.unwrap_or(Timing {
            initial_delay: Duration::from_secs(3600),
            period: Duration::from_secs(3600),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 1,
        });
        tokio::time::interval_at(
            tokio::time::Instant::now() + timing.initial_delay,
            timing.period,
        )
    };
    let mut ready_tick = ticker(readiness.as_ref().map(|(_, t)| *t));
    let mut live_tick = ticker(liveness.as_ref().map(|(_, t)| *t));
    loop {
        tokio::select! {
            status = child.wait() => {
                signal_group(pid, Signal::SIGKILL); // leftovers of the group
                return Exit::Exited { code: exit_code(status), reason: "Error" };
            }
            changed = s.stop.changed() => {
                let grace = match (changed, *s.stop.borrow()) {
                    (Ok(()), Some(stop)) => stop.grace,
                    (Ok(()), None) => continue,
                    (Err(_), _) => Duration::ZERO,
                };
                return Exit::Stopped { code: terminate(&mut child, pid, grace).await };
            }
            _ = ready_tick.tick(), if readiness.is_some() => {
                if let Some((p, t)) = &readiness {
                    let ok = probe::run(p, &s.container, &s.pod_ip, t).await;
                    if ready.record(ok, t) {
                        send(s, State::Running { started_at, pid }, ready.ok, restart_count, last);
                    }
                }
            }
            _ = live_tick.tick(), if liveness.is_some() => {
                if let Some((p, t)) = &liveness {
                    let ok = probe::run(p, &s.container, &s.pod_ip, t).await;
                    if live.record(ok, t) && !live.ok {
                        tracing::info!(container = %s.container.name, "liveness probe failed; restarting");
                        let code = terminate(&mut child, pid, Duration::from_secs(2)).await;
                        return Exit::Exited { code, reason: "LivenessProbeFailed" };
                    }
                }
            }
        }
    }
}
