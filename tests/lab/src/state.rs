//! A lab's persistent state: the run directory layout and `state.json` (namespaces, pids,
//! ports), plus process identity checks via `/proc`.
//!
//! Owns reading and writing files under `${XDG_RUNTIME_DIR:-/tmp}/ferrolb-lab/`. It must not
//! start, signal or kill processes, nor run any network command; teardown lives in `teardown`.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the state inside a run directory.
pub const STATE_FILE: &str = "state.json";
/// Current `state.json` format version.
pub const STATE_VERSION: u32 = 1;

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// `state.json` exists but cannot be parsed.
    #[error("{path} is not a valid lab state: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A lab with that id already has a run directory.
    #[error("a lab named {0:?} already exists (run `ferrolb-lab down {0}` first)")]
    Exists(String),
    /// No lab with that id is known.
    #[error("no lab named {0:?}")]
    NotFound(String),
    /// No lab exists at all.
    #[error("no lab is running (start one with `ferrolb-lab up`)")]
    NoLabs,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Identity of a process: its pid plus its start time (clock ticks since boot, field 22 of
/// `/proc/<pid>/stat`), so a recycled pid is never mistaken for the original process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcId {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
}

impl ProcId {
    /// The identity of a live process, if it exists.
    pub fn of(pid: u32) -> Option<ProcId> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, start_time) = parse_stat(&stat)?;
        Some(ProcId { pid, start_time })
    }

    /// The identity of this process.
    pub fn current() -> Option<ProcId> {
        ProcId::of(std::process::id())
    }

    /// True when the same process (pid and start time) still exists and is not a zombie.
    pub fn is_alive(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|s| parse_stat(&s))
            .is_some_and(|(state, start)| start == self.start_time && state != 'Z' && state != 'X')
    }
}

/// Extracts the state letter and start time from a `/proc/<pid>/stat` line. The command name
/// (field 2) may contain spaces and parentheses, so parsing starts after the last `)`.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the comm, field 3 is the state; start time is field 22, i.e. 19 fields later.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Lifecycle phase recorded in `state.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `up` is in progress (or died midway, if the owner is gone).
    Starting,
    /// The lab is fully up.
    Ready,
}

impl Phase {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
        }
    }
}

/// One background process of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// Role, e.g. `etcd`, `kube-apiserver`, `relay-host`, `kube-proxy-node-1`.
    pub name: String,
    /// Identity; the process is also the leader of its own process group.
    pub id: ProcId,
    /// Namespace it runs in, `None` for the host namespace.
    pub netns: Option<String>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

/// Everything needed to find, use and tear down a lab from another process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// Run id.
    pub id: String,
    /// Creation time, milliseconds since the Unix epoch (picks the default lab).
    pub created_unix_ms: u64,
    /// Phase of the lab.
    pub phase: Phase,
    /// The process the lab lives and dies with; `None` for labs kept by `ferrolb-lab up`,
    /// which stay until `down`. `gc` removes labs whose owner is gone.
    pub owner: Option<ProcId>,
    /// Number of nodes.
    pub nodes: usize,
    /// Whether kube-proxy runs on the nodes.
    pub kube_proxy: bool,
    /// kube-proxy's mode.
    #[serde(default)]
    pub proxy_mode: crate::controlplane::ProxyMode,
    /// Whether the nodes are real (containerd and a kubelet each) rather than stand-in Node
    /// objects.
    #[serde(default)]
    pub kubelet: bool,
    /// Whether the lab has the BGP router (`<id>-router`, `<id>-rclient`).
    #[serde(default)]
    pub router: bool,
    /// Where the Kubernetes tools live.
    pub tools_bin: PathBuf,
    /// Port of the host-side relay on 127.0.0.1, once known.
    pub host_port: Option<u16>,
    /// Namespaces created (or about to be created) so far.
    pub namespaces: Vec<String>,
    /// Background processes started so far.
    pub processes: Vec<ProcRecord>,
}

impl LabState {
    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings and numbers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses `state.json` text.
    pub fn from_json(text: &str) -> Result<LabState, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The record of the process called `name`.
    pub fn process(&self, name: &str) -> Option<&ProcRecord> {
        self.processes.iter().find(|p| p.name == name)
    }
}

/// Root of all run directories given the value of `XDG_RUNTIME_DIR`.
pub fn state_root_from(xdg_runtime_dir: Option<OsString>) -> PathBuf {
    let base = xdg_runtime_dir
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("ferrolb-lab")
}

/// Root of all run directories: `${XDG_RUNTIME_DIR:-/tmp}/ferrolb-lab`.
pub fn state_root() -> PathBuf {
    state_root_from(std::env::var_os("XDG_RUNTIME_DIR"))
}

/// Run directory of lab `id`.
pub fn run_dir(id: &str) -> PathBuf {
    state_root().join(id)
}

/// Creates the run directory for a new lab; fails with [`StateError::Exists`] if taken, so
/// two processes can never claim the same id.
pub fn create_run_dir(id: &str) -> Result<PathBuf, StateError> {
    let root = state_root();
    let dir = root.join(id);
    let mut attempts = 0;
    loop {
        fs::create_dir_all(&root).map_err(io_err("create", &root))?;
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.into()));
            }
            // A concurrent teardown removed the (then empty) root in between; make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => attempts += 1,
            Err(e) => return Err(io_err("create", &dir)(e)),
        }
    }
}

/// Removes the root directory if no lab is left in it (so `down` leaves nothing behind).
pub fn remove_root_if_empty() {
    // remove_dir refuses non-empty directories, so this never deletes another lab.
    let _ = fs::remove_dir(state_root());
}

/// Writes `state.json` atomically (temp file + rename) so readers never see half a file.
pub fn save(dir: &Path, state: &LabState) -> Result<(), StateError> {
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    fs::write(&tmp, state.to_json()).map_err(io_err("write", &tmp))?;
    let path = dir.join(STATE_FILE);
    fs::rename(&tmp, &path).map_err(io_err("rename", &path))
}

/// Reads `state.json` of lab `id`.
pub fn load(id: &str) -> Result<LabState, StateError> {
    let path = run_dir(id).join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StateError::NotFound(id.into()));
        }
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    LabState::from_json(&text).map_err(|source| StateError::Parse { path, source })
}

/// Ids of every run directory under the root (with or without a readable state).
pub fn list_ids() -> Vec<String> {
    let Ok(entries) = fs::read_dir(state_root()) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids
}

/// Every lab with a readable state, newest first.
pub fn list() -> Vec<LabState> {
    let mut labs: Vec<LabState> = list_ids().iter().filter_map(|id| load(id).ok()).collect();
    labs.sort_by_key(|s| std::cmp::Reverse(s.created_unix_ms));
    labs
}

/// The lab `name`, or the most recently created lab when `name` is `None`.
pub fn resolve(name: Option<&str>) -> Result<LabState, StateError> {
    match name {
        Some(id) => load(id),
        None => list().into_iter().next().ok_or(StateError::NoLabs),
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LabState {
        LabState {
            version: STATE_VERSION,
            id: "flb00aa11".into(),
            created_unix_ms: 1_700_000_000_123,
            phase: Phase::Starting,
            owner: Some(ProcId {
                pid: 42,
                start_time: 777,
            }),
            nodes: 2,
            kube_proxy: true,
            proxy_mode: crate::controlplane::ProxyMode::Nftables,
            kubelet: true,
            router: false,
            tools_bin: "/cache/bin".into(),
            host_port: Some(40123),
            namespaces: vec!["flb00aa11-lan".into(), "flb00aa11-cp".into()],
            processes: vec![ProcRecord {
                name: "etcd".into(),
                id: ProcId {
                    pid: 100,
                    start_time: 5,
                },
                netns: Some("flb00aa11-cp".into()),
                log: "/run/x/logs/etcd.log".into(),
            }],
        }
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = sample();
        let json = s.to_json();
        assert!(json.contains("\"phase\": \"starting\""), "{json}");
        assert_eq!(LabState::from_json(&json).expect("parses"), s);
        let kept = LabState {
            owner: None,
            phase: Phase::Ready,
            ..s
        };
        assert_eq!(LabState::from_json(&kept.to_json()).expect("parses"), kept);
        assert_eq!(kept.process("etcd").map(|p| p.id.pid), Some(100));
        assert!(kept.process("kube-apiserver").is_none());
    }

    #[test]
    fn garbage_state_is_an_error_not_a_panic() {
        assert!(LabState::from_json("{").is_err());
        assert!(LabState::from_json("{\"id\": 3}").is_err());
    }

    #[test]
    fn state_root_follows_xdg_runtime_dir() {
        assert_eq!(
            state_root_from(Some("/run/user/1000".into())),
            PathBuf::from("/run/user/1000/ferrolb-lab")
        );
        assert_eq!(
            state_root_from(Some("".into())),
            PathBuf::from("/tmp/ferrolb-lab")
        );
        assert_eq!(state_root_from(None), PathBuf::from("/tmp/ferrolb-lab"));
    }

    #[test]
    fn parses_proc_stat_even_with_odd_command_names() {
        let line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 \
                    1000 10 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 98765)));
        assert_eq!(parse_stat("1 (x) Z 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn current_process_is_alive_and_a_recycled_pid_is_not() {
        let me = ProcId::current().expect("own /proc entry");
        assert!(me.is_alive());
        let recycled = ProcId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!recycled.is_alive());
    }
}
