//! Removing labs: killing their processes, deleting their namespaces (which takes the veths and
//! bridge with them) and their run directory; and `gc`, which removes labs whose owner process
//! is gone.
//!
//! Owns destruction only. Everything here is best effort and never panics: each failure is
//! collected into the report, and every wait is bounded. It touches only namespaces named
//! after the lab and processes recorded in its state, running inside its namespaces, or
//! naming its run directory on their command line.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::plan::{self, generated_id_of_netns, namespaces_of, parse_netns_list};
use crate::process::{self, Signal};
use crate::state::{self, LabState, Phase};

/// Rounds of "kill everything in the namespace" before giving up on it.
const KILL_ROUNDS: usize = 100;
/// Pause between rounds (so at most ~2 s per namespace).
const KILL_PAUSE: Duration = Duration::from_millis(20);

/// What a teardown did and what it could not do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TeardownReport {
    /// Processes signalled.
    pub killed: usize,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Whether the run directory was removed.
    pub run_dir_removed: bool,
    /// Everything that went wrong.
    pub problems: Vec<String>,
}

impl TeardownReport {
    /// True when nothing went wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Names from `ip netns list` (empty if it cannot run).
pub fn list_netns() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .stdin(Stdio::null())
        .output()
        .map(|o| parse_netns_list(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

/// Pids of processes inside `netns`.
pub fn netns_pids(netns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", netns])
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Tears down lab `id`: kills its recorded processes (by process group) and reaps `children`,
/// kills any process left inside its namespaces or naming its run directory, deletes the
/// namespaces, then removes the run directory.
pub fn teardown(
    id: &str,
    state: Option<&LabState>,
    run_dir: &Path,
    children: &mut Vec<(String, Child)>,
) -> TeardownReport {
    let mut report = TeardownReport::default();
    let mut signalled = Vec::new();
    if let Some(st) = state {
        for p in &st.processes {
            if process::kill_recorded(p.id) {
                report.killed += 1;
                signalled.push(p.id);
            }
        }
    }
    // Anything else still naming the run directory (e.g. a relay spawned just before a crash
    // could record it, or a containerd shim), in the host namespace or elsewhere.
    let needle = format!("{}/", run_dir.display());
    for pid in process::pids_with_arg(&needle) {
        let id = crate::state::ProcId::of(pid);
        if process::signal_pid(pid, Signal::Kill).is_ok() {
            report.killed += 1;
            signalled.extend(id);
        }
    }
    // SIGKILL is not instant: wait (bounded) so that `down` returning means they are gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while signalled.iter().any(|p| p.is_alive()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Real nodes: the containers (found by cgroup, since pods have network namespaces of their
    // own), then mounts, cgroups and the machine's shared paths.
    let real = state.is_some_and(|s| s.kubelet) || run_dir.join("nodes").is_dir();
    let (sandboxes, sockets) = if real {
        real_nodes(id, run_dir, &mut report)
    } else {
        Default::default()
    };
    for (name, child) in children.iter_mut() {
        if process::wait_timeout(child, Duration::from_secs(2)).is_none() {
            let _ = child.kill();
            if process::wait_timeout(child, Duration::from_secs(1)).is_none() {
                report
                    .problems
                    .push(format!("{name} (pid {}) did not exit", child.id()));
            }
        }
    }
    children.clear();

    let listed = list_netns();
    let mut namespaces = namespaces_of(id, &listed);
    if let Some(st) = state {
        for ns in &st.namespaces {
            if listed.contains(ns) && !namespaces.contains(ns) {
                namespaces.push(ns.clone());
            }
        }
    }
    for ns in namespaces {
        match empty_netns(&ns) {
            Ok(n) => report.killed += n,
            Err(e) => report.problems.push(e),
        }
        match Command::new("ip")
            .args(["netns", "del", &ns])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => report.namespaces.push(ns),
            Ok(o) => report.problems.push(format!(
                "ip netns del {ns}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => report.problems.push(format!("ip netns del {ns}: {e}")),
        }
    }

    match std::fs::remove_dir_all(run_dir) {
        Ok(()) => report.run_dir_removed = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report
            .problems
            .push(format!("remove {}: {e}", run_dir.display())),
    }
    // Last, once its namespaces are gone: the machine-wide record of what labs changed.
    report
        .problems
        .extend(crate::host::release(id, run_dir, &sandboxes, &sockets));
    if run_dir.parent() == Some(state::state_root().as_path()) {
        state::remove_root_if_empty();
    }
    report
}

/// Undoes what real nodes did outside the namespaces: kills every process in the nodes' cgroup
/// roots, unmounts everything under the run directory and removes the cgroups. Returns the pod
/// sandbox ids and shim sockets their containerds recorded, for [`crate::host::release`].
fn real_nodes(
    id: &str,
    run_dir: &Path,
    report: &mut TeardownReport,
) -> (Vec<String>, Vec<std::path::PathBuf>) {
    let names: Vec<String> = std::fs::read_dir(run_dir.join("nodes"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut sockets = Vec::new();
    let mut sandboxes = Vec::new();
    for n in &names {
        let layout = crate::node::NodeLayout::new(run_dir, n);
        sockets.extend(crate::host::shim_sockets(&layout.containerd_state()));
        sandboxes.extend(crate::host::sandbox_ids(&layout.containerd_root()));
    }
    for n in &names {
        match crate::host::kill_cgroup(&crate::node::cgroup_root(id, n)) {
            Ok(k) => report.killed += k,
            Err(p) => report.problems.push(p),
        }
    }
    report.problems.extend(crate::host::unmount_under(run_dir));
    for n in &names {
        report
            .problems
            .extend(crate::host::remove_cgroup(&crate::node::cgroup_root(id, n)));
    }
    (sandboxes, sockets)
}

/// SIGKILLs everything inside `netns` until nothing is left (bounded). Returns how many
/// processes were signalled.
fn empty_netns(netns: &str) -> Result<usize, String> {
    let mut killed = 0;
    for _ in 0..KILL_ROUNDS {
        let pids = netns_pids(netns);
        if pids.is_empty() {
            return Ok(killed);
        }
        for pid in pids {
            if process::signal_pid(pid, Signal::Kill).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(KILL_PAUSE);
    }
    Err(format!(
        "processes remain in {netns}: {:?}",
        netns_pids(netns)
    ))
}

/// Why `gc` considers a lab abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// The process that owned it has exited.
    OwnerGone,
    /// Its run directory has no readable state and is older than a minute.
    NoState,
    /// Namespaces of a generated-id lab exist without a run directory.
    OrphanNamespaces,
}

impl StaleReason {
    /// Stable description.
    pub fn as_str(self) -> &'static str {
        match self {
            StaleReason::OwnerGone => "owner process is gone",
            StaleReason::NoState => "no readable state.json",
            StaleReason::OrphanNamespaces => "namespaces without a run directory",
        }
    }
}

/// How old a run directory without state must be before `gc` removes it, so a lab whose `up`
/// has just created its directory is never collected.
pub const NO_STATE_GRACE: Duration = Duration::from_secs(60);

/// Decides whether a lab is stale. `owner_alive` is `None` for labs without an owner (kept
/// by `ferrolb-lab up`), which are never collected.
pub fn stale_reason(
    state: Option<&LabState>,
    owner_alive: Option<bool>,
    dir_age: Duration,
) -> Option<StaleReason> {
    match (state, owner_alive) {
        (None, _) if dir_age >= NO_STATE_GRACE => Some(StaleReason::NoState),
        (None, _) => None,
        (Some(_), Some(false)) => Some(StaleReason::OwnerGone),
        (Some(_), _) => None,
    }
}

/// One lab removed by `gc` or `down --all`.
#[derive(Debug, Clone)]
pub struct Removed {
    /// Lab id.
    pub id: String,
    /// Why (for gc).
    pub reason: Option<StaleReason>,
    /// What happened.
    pub report: TeardownReport,
}

/// Removes every abandoned lab (see [`stale_reason`]) and orphan namespaces of generated-id
/// labs. Labs kept by `ferrolb-lab up` (no owner) are left alone.
pub fn gc() -> Vec<Removed> {
    let mut removed = Vec::new();
    for id in state::list_ids() {
        let dir = state::run_dir(&id);
        let st = state::load(&id).ok();
        let owner_alive = st.as_ref().and_then(|s| s.owner).map(|o| o.is_alive());
        let age = std::fs::metadata(&dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        if let Some(reason) = stale_reason(st.as_ref(), owner_alive, age) {
            let report = teardown(&id, st.as_ref(), &dir, &mut Vec::new());
            removed.push(Removed {
                id,
                reason: Some(reason),
                report,
            });
        }
    }
    for id in orphan_ids() {
        let report = teardown(&id, None, &state::run_dir(&id), &mut Vec::new());
        removed.push(Removed {
            id,
            reason: Some(StaleReason::OrphanNamespaces),
            report,
        });
    }
    removed
}

/// Generated ids that have namespaces but no run directory.
fn orphan_ids() -> Vec<String> {
    // Namespaces first, run directories second: a lab creates its run directory before any
    // namespace, so a lab being brought up right now is always seen as known. (The other order
    // would tear down a concurrent `up` whose directory appeared between the two listings.)
    let namespaces = list_netns();
    let known = state::list_ids();
    let mut ids: Vec<String> = namespaces
        .iter()
        .filter_map(|ns| generated_id_of_netns(ns))
        .filter(|id| !known.iter().any(|k| k == id))
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Removes every lab: all run directories and orphan namespaces of generated-id labs.
pub fn down_all() -> Vec<Removed> {
    let mut ids = state::list_ids();
    ids.extend(orphan_ids());
    ids.into_iter()
        .map(|id| {
            let st = state::load(&id).ok();
            let report = teardown(&id, st.as_ref(), &state::run_dir(&id), &mut Vec::new());
            Removed {
                id,
                reason: None,
                report,
            }
        })
        .collect()
}

/// Removes lab `id`, with or without a readable state. Fails only if nothing of it exists.
pub fn down(id: &str) -> Result<TeardownReport, state::StateError> {
    plan::validate_id(id).map_err(|_| state::StateError::NotFound(id.to_string()))?;
    let dir = state::run_dir(id);
    let st = state::load(id).ok();
    if st.is_none() && !dir.exists() && namespaces_of(id, &list_netns()).is_empty() {
        return Err(state::StateError::NotFound(id.to_string()));
    }
    Ok(teardown(id, st.as_ref(), &dir, &mut Vec::new()))
}

/// Whether a lab looks usable: ready and every recorded process alive.
pub fn is_healthy(st: &LabState) -> bool {
    st.phase == Phase::Ready && st.processes.iter().all(|p| p.id.is_alive())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ProcId, STATE_VERSION};

    fn st(owner: Option<ProcId>) -> LabState {
        LabState {
            version: STATE_VERSION,
            id: "flb000000".into(),
            created_unix_ms: 0,
            phase: Phase::Ready,
            owner,
            nodes: 1,
            kube_proxy: false,
            proxy_mode: Default::default(),
            kubelet: false,
            router: false,
            tools_bin: "/bin".into(),
            host_port: None,
            namespaces: vec![],
            processes: vec![],
        }
    }

    #[test]
    fn gc_decisions() {
        let owned = st(Some(ProcId {
            pid: 1,
            start_time: 1,
        }));
        let minute = Duration::from_secs(61);
        assert_eq!(
            stale_reason(Some(&owned), Some(false), minute),
            Some(StaleReason::OwnerGone)
        );
        assert_eq!(stale_reason(Some(&owned), Some(true), minute), None);
        // Kept labs (no owner) are never collected.
        assert_eq!(stale_reason(Some(&st(None)), None, minute), None);
        // A directory without state is collected only after the grace period.
        assert_eq!(stale_reason(None, None, minute), Some(StaleReason::NoState));
        assert_eq!(stale_reason(None, None, Duration::from_secs(5)), None);
    }

    #[test]
    fn down_rejects_names_that_are_not_lab_ids() {
        assert!(down("../etc").is_err());
        assert!(down("definitely-not-a-lab-zz").is_err());
    }
}
