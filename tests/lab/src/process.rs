//! Background processes of the lab: starting them detached (own process group, output to a
//! log file, optionally inside a network namespace), signalling them with the `kill` command,
//! and finding leftovers through `/proc`.
//!
//! Owns process lifetimes only. It must not create namespaces or interfaces, and never uses
//! `unsafe` or libc: signals go through `/usr/bin/kill`, liveness through `/proc`.

use std::fs::{self, File};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::state::ProcId;

/// Why a process could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The log file could not be created.
    #[error("create log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The program could not be started.
    #[error("start {program}: {source}")]
    Spawn {
        /// What was started.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An empty command line.
    #[error("empty command")]
    EmptyCommand,
    /// The `kill` command failed to run.
    #[error("kill -s {signal} {pid}: {detail}")]
    Signal {
        /// Signal name.
        signal: &'static str,
        /// Target pid (negative for a process group).
        pid: String,
        /// What went wrong.
        detail: String,
    },
}

/// Signals the lab sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL.
    Kill,
    /// SIGTERM.
    Term,
    /// SIGINT.
    Int,
    /// SIGSTOP (freeze, e.g. to simulate a hung speaker).
    Stop,
    /// SIGCONT (resume after SIGSTOP).
    Cont,
}

impl Signal {
    /// The name `kill -s` understands.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Kill => "KILL",
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Stop => "STOP",
            Signal::Cont => "CONT",
        }
    }
}

/// The argv that runs `cmd` inside `netns` (or as is, for the host namespace).
pub fn in_netns(netns: Option<&str>, cmd: &[String]) -> Vec<String> {
    match netns {
        Some(ns) => ["ip", "netns", "exec", ns]
            .iter()
            .map(|s| (*s).to_string())
            .chain(cmd.iter().cloned())
            .collect(),
        None => cmd.to_vec(),
    }
}

/// The argv that runs `cmd` in `netns` with `nsenter --net`, entering only the network
/// namespace. Daemons that manage cgroups (containerd, the kubelet) need this: `ip netns exec`
/// also remounts /sys for the namespace, which hides the cgroup hierarchies under /sys/fs/cgroup.
/// nsenter execs the command, so the child's pid is the daemon's own.
pub fn nsenter_argv(netns: &str, cmd: &[String]) -> Vec<String> {
    [
        "nsenter".to_string(),
        format!("--net=/run/netns/{netns}"),
        "--".to_string(),
    ]
    .into_iter()
    .chain(cmd.iter().cloned())
    .collect()
}

/// Starts `cmd` in `netns` detached: its own process group (so terminal signals to the caller
/// do not reach it and the whole group can be killed at once), stdin from /dev/null, stdout and
/// stderr appended to `log`. `ip netns exec` execs the command, so the child's pid is the
/// daemon's own pid.
pub fn spawn_detached(
    netns: Option<&str>,
    cmd: &[String],
    log: &Path,
    env: &[(&str, &str)],
) -> Result<Child, ProcessError> {
    let argv = in_netns(netns, cmd);
    let (program, args) = argv.split_first().ok_or(ProcessError::EmptyCommand)?;
    if let Some(dir) = log.parent() {
        fs::create_dir_all(dir).map_err(|source| ProcessError::Log {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let open = || {
        File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ProcessError::Log {
                path: log.to_path_buf(),
                source,
            })
    };
    let out = open()?;
    let err = open()?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().map_err(|source| ProcessError::Spawn {
        program: argv.join(" "),
        source,
    })
}

/// Waits (at most `timeout`) until process `pid` is inside network namespace `netns`, i.e.
/// `ip netns exec` has switched namespaces. Returns false on timeout or if the process exits.
pub fn wait_in_netns(pid: u32, netns: &str, timeout: Duration) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(target) = fs::metadata(Path::new("/run/netns").join(netns)) else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match fs::metadata(format!("/proc/{pid}/ns/net")) {
            Ok(m) if m.dev() == target.dev() && m.ino() == target.ino() => return true,
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => return false,
        }
    }
}

/// Sends `signal` to the whole process group led by `pid`.
pub fn signal_group(pid: u32, signal: Signal) -> Result<(), ProcessError> {
    send(&format!("-{pid}"), signal)
}

/// Sends `signal` to the single process `pid`.
pub fn signal_pid(pid: u32, signal: Signal) -> Result<(), ProcessError> {
    send(&pid.to_string(), signal)
}

fn send(target: &str, signal: Signal) -> Result<(), ProcessError> {
    let out = Command::new("kill")
        .args(["-s", signal.as_str(), "--", target])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ProcessError::Signal {
            signal: signal.as_str(),
            pid: target.to_string(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ProcessError::Signal {
            signal: signal.as_str(),
            pid: target.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Kills the process group of a recorded process, if that very process still exists (a
/// recycled pid is left alone). Returns whether a signal was sent.
pub fn kill_recorded(id: ProcId) -> bool {
    if !id.is_alive() {
        return false;
    }
    // The group may already be gone while the leader lingers; fall back to the pid.
    signal_group(id.pid, Signal::Kill).is_ok() || signal_pid(id.pid, Signal::Kill).is_ok()
}

/// Waits up to `timeout` for `child` to exit, polling; returns its status if it did.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Pids of live processes whose command line contains `needle` (e.g. a run directory path),
/// excluding this process.
pub fn pids_with_arg(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| cmdline_contains(&raw, needle))
                && ProcId::of(pid).is_some_and(|id| id.is_alive())
        })
        .collect()
}

/// True when any NUL-separated argument of `raw` contains `needle`.
pub fn cmdline_contains(raw: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && raw
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(needle))
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = fs::read(path) else {
        return format!("(no log at {})", path.display());
    };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A background process started by [`crate::Lab::spawn`]. It runs in its own process group;
/// dropping it kills the group (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct LabProcess {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl LabProcess {
    /// Wraps a spawned child.
    pub(crate) fn new(name: &str, child: Child, log: PathBuf) -> LabProcess {
        LabProcess {
            name: name.to_string(),
            child,
            log,
            exited: None,
        }
    }

    /// The name it was started under (its log name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it has logged so far (lossy UTF-8; empty if the log is unreadable).
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// True while it has not exited. A stopped (SIGSTOP) process still counts as running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Sends `signal` to its process group (SIGSTOP/SIGCONT freeze and resume all of it).
    pub fn signal(&mut self, signal: Signal) -> Result<(), ProcessError> {
        signal_group(self.pid(), signal)
    }

    /// Waits up to `timeout` for it to exit and returns its status if it did.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = wait_timeout(&mut self.child, timeout);
        }
        self.exited
    }

    /// SIGKILLs its process group and reaps it (waits at most 5 s).
    pub fn kill(&mut self) -> Result<(), ProcessError> {
        if !self.is_running() {
            return Ok(());
        }
        let sent = signal_group(self.pid(), Signal::Kill);
        // A stopped process dies from SIGKILL too; reap it so no zombie is left.
        self.wait_timeout(Duration::from_secs(5));
        sent
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_netns_prefixes_ip_netns_exec() {
        let cmd = vec!["ping".to_string(), "-c1".to_string()];
        assert_eq!(
            in_netns(Some("x-client"), &cmd),
            ["ip", "netns", "exec", "x-client", "ping", "-c1"]
        );
        assert_eq!(in_netns(None, &cmd), cmd);
        assert_eq!(
            nsenter_argv("x-node-1", &cmd),
            ["nsenter", "--net=/run/netns/x-node-1", "--", "ping", "-c1"]
        );
    }

    #[test]
    fn cmdline_matching() {
        let raw = b"etcd\0--data-dir=/tmp/ferrolb-lab/flb1/etcd\0";
        assert!(cmdline_contains(raw, "/tmp/ferrolb-lab/flb1/"));
        assert!(!cmdline_contains(raw, "/tmp/ferrolb-lab/flb2/"));
        assert!(!cmdline_contains(raw, ""));
    }

    #[test]
    fn signals_stop_resume_and_kill_a_process_group() {
        let dir =
            std::env::temp_dir().join(format!("ferrolb-lab-proc-test-{}", std::process::id()));
        let log = dir.join("sleep.log");
        let child =
            spawn_detached(None, &["sleep".into(), "30".into()], &log, &[]).expect("spawn sleep");
        let mut p = LabProcess::new("sleep", child, log.clone());
        let id = ProcId::of(p.pid()).expect("proc entry");
        assert!(p.is_running());
        p.signal(Signal::Stop).expect("stop");
        // The kernel stops the process when it next runs, which on a busy machine is a moment
        // after `kill` returns: wait for it, within a bound.
        let state = || {
            fs::read_to_string(format!("/proc/{}/stat", p.pid()))
                .ok()
                .and_then(|st| crate::state::parse_stat(&st).map(|s| s.0))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while state() != Some('T') && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(state(), Some('T'), "stopped within 5 s");
        p.signal(Signal::Cont).expect("cont");
        p.kill().expect("kill");
        assert!(!p.is_running());
        assert!(!id.is_alive());
        assert!(log.exists());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn log_tail_keeps_the_end() {
        let dir =
            std::env::temp_dir().join(format!("ferrolb-lab-tail-test-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("x.log");
        fs::write(&f, "a\nb\nc\nd\n").expect("write");
        assert_eq!(log_tail(&f, 2), "c\nd");
        assert_eq!(log_tail(&f, 10), "a\nb\nc\nd");
        assert!(log_tail(&dir.join("missing"), 3).contains("no log"));
        let _ = fs::remove_dir_all(dir);
    }
}
