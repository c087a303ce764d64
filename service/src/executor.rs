//! Where a run's process lives. The service talks to an [`Executor`] only, so that a
//! Kubernetes executor (a Job per run) can replace [`LocalExecutor`] later.
//!
//! [`LocalExecutor`] starts `weir run` as a child of the service, in its own process group
//! (so that cancelling reaches every process of a `--processes` run, and a signal to the
//! service's group does not reach the runs), with stdout and stderr appended to the run's
//! log file. The child writes its outcome to a result file (`weir run --result-file`), which
//! also lets a restarted service finish a run whose process ended while it was down.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// What to start.
#[derive(Debug, Clone)]
pub struct Launch {
    pub run_id: String,
    pub job_file: PathBuf,
    pub vars: Vec<(String, String)>,
    pub workers: usize,
    pub log: PathBuf,
    pub result: PathBuf,
    /// What relative paths in the definition are relative to: the service's working
    /// directory, as when it validated the definition.
    pub base_dir: PathBuf,
    /// The only key ids the run may use; `None`: any the service holds.
    pub allowed_keys: Option<Vec<String>>,
}

/// Limits `command` to the key ids `allowed` (`None`: no limit): `WEIR_ALLOWED_KEYS` names
/// them, and the `WEIR_KEY_*` variables of other keys are not passed on at all.
pub fn limit_keys(command: &mut tokio::process::Command, allowed: Option<&[String]>) {
    let Some(allowed) = allowed else { return };
    command.env(weir_connectors::keys::ALLOWED_KEYS_ENV, allowed.join(","));
    let granted: Vec<String> = allowed.iter().map(|id| weir_connectors::keys::env_var_of(id)).collect();
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("WEIR_KEY_") && name != "WEIR_KEY_DIR" && !granted.iter().any(|g| g == name) {
            command.env_remove(name);
        }
    }
}

/// How a run's process ended, as far as the executor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// A process the service re-attached to after a restart: not its child, so its exit
    /// status is unknown (the result file tells the outcome).
    Unknown,
}

/// A started run's process.
pub trait RunHandle: Send {
    fn pid(&self) -> u32;
    /// Waits for the process to end.
    fn wait(self: Box<Self>) -> futures::future::BoxFuture<'static, Exit>;
}

/// Starts runs and signals them.
pub trait Executor: Send + Sync {
    fn start(&self, launch: &Launch) -> Result<Box<dyn RunHandle>, String>;
    /// The process `pid` of run `run_id`, if it still lives (after a restart).
    fn reattach(&self, run_id: &str, pid: u32) -> Option<Box<dyn RunHandle>>;
    /// Sends `signal` to the run's process group.
    fn signal(&self, pid: u32, signal: Signal);
}

/// Runs as child processes of the service.
pub struct LocalExecutor {
    /// The `weir` binary (the service's own).
    pub binary: PathBuf,
    /// The storage profiles file, passed to every run.
    pub profiles: Option<PathBuf>,
}

/// Passes the service's storage profiles file (or none) to a child process.
pub fn pass_profiles(command: &mut tokio::process::Command, profiles: Option<&std::path::Path>) {
    match profiles {
        Some(path) => command.env(weir_connectors::profiles::PROFILES_ENV, path),
        None => command.env_remove(weir_connectors::profiles::PROFILES_ENV),
    };
}

struct ChildHandle {
    child: tokio::process::Child,
    pid: u32,
}

impl RunHandle for ChildHandle {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn wait(mut self: Box<Self>) -> futures::future::BoxFuture<'static, Exit> {
        Box::pin(async move {
            use std::os::unix::process::ExitStatusExt;
            match self.child.wait().await {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(signal)) => Exit::Signal(signal),
                    (None, None) => Exit::Unknown,
                },
                Err(_) => Exit::Unknown,
            }
        })
    }
}

/// A process the service did not start (re-attached after a restart): polled.
struct AdoptedHandle {
    pid: u32,
}

impl RunHandle for AdoptedHandle {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn wait(self: Box<Self>) -> futures::future::BoxFuture<'static, Exit> {
        Box::pin(async move {
            while alive(self.pid) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Exit::Unknown
        })
    }
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: Z is a zombie, X dead.
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
        }
        Err(_) => false,
    }
}

impl Executor for LocalExecutor {
    fn start(&self, launch: &Launch) -> Result<Box<dyn RunHandle>, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .map_err(|error| format!("cannot open the log {}: {error}", launch.log.display()))?;
        let log_too = log.try_clone().map_err(|error| format!("cannot open the log: {error}"))?;
        let mut command = tokio::process::Command::new(&self.binary);
        pass_profiles(&mut command, self.profiles.as_deref());
        command
            .arg("run")
            .arg(&launch.job_file)
            .arg("--workers")
            .arg(launch.workers.to_string())
            .arg("--result-file")
            .arg(&launch.result)
            .arg("--base-dir")
            .arg(&launch.base_dir)
            .arg("--var")
            .arg(format!("run_id={}", launch.run_id));
        // The other variables travel in a file beside the job's (in the private state
        // folder), not on the command line, which every local user can read.
        if !launch.vars.is_empty() {
            let values: std::collections::BTreeMap<&str, &str> =
                launch.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let path = launch.job_file.with_file_name("vars.json");
            let json = serde_json::to_vec(&values).map_err(|error| error.to_string())?;
            std::fs::write(&path, json)
                .map_err(|error| format!("cannot write the run's variables {}: {error}", path.display()))?;
            command.arg("--vars-file").arg(&path);
        }
        limit_keys(&mut command, launch.allowed_keys.as_deref());
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(log))
            .stderr(std::process::Stdio::from(log_too))
            .process_group(0)
            .kill_on_drop(false);
        let child = command.spawn().map_err(|error| format!("cannot start {}: {error}", self.binary.display()))?;
        let pid = child.id().ok_or("the run's process ended at once")?;
        Ok(Box::new(ChildHandle { child, pid }))
    }

    fn reattach(&self, run_id: &str, pid: u32) -> Option<Box<dyn RunHandle>> {
        // The pid may have been reused: it must still be `weir run` of this run.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = String::from_utf8_lossy(&cmdline).contains(&format!("run_id={run_id}"));
        (ours && alive(pid)).then(|| Box::new(AdoptedHandle { pid }) as Box<dyn RunHandle>)
    }

    fn signal(&self, pid: u32, signal: Signal) {
        let Ok(pid) = i32::try_from(pid) else { return };
        // The run leads its own group; fall back to the process alone.
        if killpg(Pid::from_raw(pid), signal).is_err() {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}
