//! What real nodes change on this machine outside the lab's directories and namespaces, and
//! undoing all of it: the nodes' cgroup roots (in every cgroup hierarchy), the mounts the
//! kubelets and containerds make in the machine's mount namespace, the paths they hard-code
//! (`/var/log/containers`, `/var/lib/kubelet/device-plugins`, `/var/lib/cni`,
//! `/run/containerd/s`), and the kernel settings every kubelet writes at start.
//!
//! Several labs may run at once and share these. So each lab removes only its own entries
//! (cgroups named after it, mounts and symlinks into its run directory, CNI records of its
//! network, shim sockets its containerds recorded), and the machine-wide changes are tracked in
//! one record, `<state root>/host.json`: the first lab with real nodes notes the original
//! sysctl values and which shared directories did not exist; the last one to go restores the
//! values and removes those directories.
//!
//! Best effort and bounded like the rest of teardown: failures are returned as problems,
//! never panics. No `unsafe`: mounts are undone with `umount`, processes signalled with `kill`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::process::{self, Signal};
use crate::state;

/// The kernel settings a kubelet sets at start (`setupKernelTunables`), as `/proc/sys` paths.
pub const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Paths the kubelet and containerd use whatever they are configured with; removed by the last
/// lab when they did not exist before the first (deepest first).
pub const SHARED_PATHS: [&str; 9] = [
    "/var/log/containers",
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet",
    "/var/lib/cni/results",
    "/var/lib/cni",
    "/run/containerd/s",
    "/run/containerd/fifo",
    "/run/containerd/runc",
    "/run/containerd",
];

/// How long to wait for the lock on `host.json`.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// A lock older than this was left by a crashed process.
const LOCK_STALE: Duration = Duration::from_secs(60);

/// Why the machine could not be prepared for real nodes.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file or directory could not be read, written or created.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No cgroup hierarchy is mounted.
    #[error("no cgroup hierarchy is mounted (see /proc/self/mountinfo)")]
    NoCgroups,
    /// Another process holds the lock on host.json.
    #[error("{0} is locked by another lab for more than {LOCK_WAIT:?}")]
    Locked(PathBuf),
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> HostError + 'a {
    move |source| HostError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// Filesystem type (`cgroup`, `cgroup2`, `overlay`, `tmpfs`, ...).
    pub fstype: String,
}

/// Parses `/proc/self/mountinfo` text: field 5 is the mount point (with `\040`-style escapes),
/// the field after the ` - ` separator the filesystem type.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some(Mount {
                point: PathBuf::from(unescape_octal(point)),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

/// Decodes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..=i + 3]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mounts() -> Vec<Mount> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// The cgroup hierarchies mounted on this machine (each v1 controller and the v2 mount).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.point)
        .collect()
}

/// Creates cgroup `root` (e.g. `/flb0a1b2c-node-1`) in every hierarchy, as the kubelet needs
/// it to exist. A new cpuset cgroup starts with no CPUs and memory nodes, so it gets its
/// parent's.
pub fn create_cgroup_root(root: &str) -> Result<(), HostError> {
    let hierarchies = cgroup_hierarchies();
    if hierarchies.is_empty() {
        return Err(HostError::NoCgroups);
    }
    for h in hierarchies {
        let dir = h.join(root.trim_start_matches('/'));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err("create cgroup", &dir)(e)),
        }
        for knob in ["cpuset.cpus", "cpuset.mems"] {
            let parent = h.join(knob);
            if let Ok(v) = fs::read_to_string(&parent) {
                let child = dir.join(knob);
                fs::write(&child, v.trim()).map_err(io_err("write", &child))?;
            }
        }
    }
    Ok(())
}

/// Every cgroup directory under `root` in hierarchy `h`, deepest first.
fn cgroup_dirs(h: &Path, root: &str) -> Vec<PathBuf> {
    let top = h.join(root.trim_start_matches('/'));
    let mut out = Vec::new();
    let mut stack = vec![top];
    while let Some(dir) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
            out.push(dir);
        }
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    out
}

/// Pids in cgroup `root`'s subtree, read from every hierarchy.
pub fn cgroup_pids(root: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = cgroup_hierarchies()
        .iter()
        .flat_map(|h| cgroup_dirs(h, root))
        .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|t| {
            t.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// SIGKILLs every process in cgroup `root`'s subtree until none is left (at most ~5 s).
/// Returns how many signals were sent, or a problem.
pub fn kill_cgroup(root: &str) -> Result<usize, String> {
    let mut killed = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = cgroup_pids(root);
        if pids.is_empty() {
            return Ok(killed);
        }
        if Instant::now() > deadline {
            return Err(format!("processes remain in cgroup {root}: {pids:?}"));
        }
        for pid in pids {
            if process::signal_pid(pid, Signal::Kill).is_ok() {
                killed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes cgroup `root` and everything under it from every hierarchy (deepest first).
/// A cgroup whose last process just died may refuse for a moment, so each is retried briefly.
pub fn remove_cgroup(root: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for h in cgroup_hierarchies() {
        for dir in cgroup_dirs(&h, root) {
            let mut last = None;
            for _ in 0..50 {
                match fs::remove_dir(&dir) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(e) = last {
                problems.push(format!("rmdir {}: {e}", dir.display()));
            }
        }
    }
    problems
}

/// Every mount point at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mounts()
        .into_iter()
        .map(|m| m.point)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// Unmounts everything at or below `dir` (deepest first; a busy mount is detached lazily).
/// Stacked mounts on one point are undone one by one. Returns problems.
pub fn unmount_under(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for _ in 0..8 {
        let points = mounts_under(dir);
        if points.is_empty() {
            return problems;
        }
        for p in points {
            let ok = umount(&p, false) || umount(&p, true);
            if !ok {
                problems.push(format!("umount {}", p.display()));
            }
        }
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        problems.push(format!("mounts remain under {}: {left:?}", dir.display()));
    }
    problems
}

fn umount(point: &Path, lazy: bool) -> bool {
    let mut cmd = Command::new("umount");
    if lazy {
        cmd.arg("--lazy");
    }
    cmd.arg(point)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What the labs changed on the machine, shared by all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Original values of [`KUBELET_SYSCTLS`], read before the first kubelet started.
    pub sysctls: BTreeMap<String, String>,
    /// Which [`SHARED_PATHS`] did not exist then.
    pub absent: Vec<PathBuf>,
    /// Whether `/run/netns` was not yet a mount point before the first lab (`ip netns add`
    /// makes it one, and it outlives the namespaces).
    #[serde(default)]
    pub netns_mount_absent: bool,
    /// Labs that have not been torn down.
    pub holders: Vec<String>,
    /// Those of them with real nodes.
    #[serde(default)]
    pub real: Vec<String>,
}

fn record_path() -> PathBuf {
    state::state_root().join("host.json")
}

/// Runs `f` on the host record under a lock file, and saves what it returns (or removes the
/// record when it returns `None`).
fn with_record<T>(f: impl FnOnce(HostRecord) -> (Option<HostRecord>, T)) -> Result<T, HostError> {
    let root = state::state_root();
    fs::create_dir_all(&root).map_err(io_err("create", &root))?;
    let lock = root.join("host.lock");
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let stale = fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > LOCK_STALE);
                if stale {
                    let _ = fs::remove_file(&lock);
                } else if Instant::now() > deadline {
                    return Err(HostError::Locked(lock));
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Err(e) => return Err(io_err("create", &lock)(e)),
        }
    }
    let path = record_path();
    let current = fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let (next, out) = f(current);
    let saved = match next {
        Some(r) => fs::write(&path, serde_json::to_string_pretty(&r).unwrap_or_default())
            .map_err(io_err("write", &path)),
        None => match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        },
    };
    let _ = fs::remove_file(&lock);
    saved.map(|()| out)
}

/// Registers lab `id` before it creates anything; `real` when it will run kubelets. The first
/// lab records whether `/run/netns` is a mount point; the first with real nodes records the
/// machine's original settings and which shared paths are absent.
pub fn acquire(id: &str, real: bool) -> Result<(), HostError> {
    with_record(|mut r| {
        if r.holders.is_empty() {
            r.netns_mount_absent = !is_mount_point(Path::new(NETNS_DIR));
        }
        if real && r.real.is_empty() {
            r.sysctls = KUBELET_SYSCTLS
                .iter()
                .filter_map(|k| {
                    let v = fs::read_to_string(Path::new("/proc/sys").join(k)).ok()?;
                    Some((k.to_string(), v.trim().to_string()))
                })
                .collect();
            r.absent = SHARED_PATHS
                .iter()
                .map(PathBuf::from)
                .filter(|p| !p.exists())
                .collect();
        }
        if !r.holders.iter().any(|h| h == id) {
            r.holders.push(id.to_string());
        }
        if real && !r.real.iter().any(|h| h == id) {
            r.real.push(id.to_string());
        }
        (Some(r), ())
    })
}

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/run/netns";

fn is_mount_point(p: &Path) -> bool {
    mounts().iter().any(|m| m.point == p)
}

/// Removes lab `id`'s entries from the shared paths: `/var/log/containers` links into
/// `run_dir`, CNI records of its network or its pod sandboxes (`sandboxes`: the loopback
/// plugin's records carry only the sandbox id), and the shim sockets listed in `shim_sockets`. If it
/// was the last lab with real nodes (labs whose run directory is gone no longer count), restores
/// the recorded settings and removes the shared directories that did not exist before; if it
/// was the last lab, undoes the `/run/netns` mount when nobody else's namespace is left in it.
/// Returns problems.
pub fn release(
    id: &str,
    run_dir: &Path,
    sandboxes: &[String],
    shim_sockets: &[PathBuf],
) -> Vec<String> {
    let mut problems = Vec::new();
    remove_matching("/var/log/containers", &mut problems, |p| {
        fs::read_link(p).is_ok_and(|t| t.starts_with(run_dir))
    });
    let network = crate::node::cni_network(id);
    for dir in ["/var/lib/cni/results", "/var/lib/cni/cache/results"] {
        remove_matching(dir, &mut problems, |p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&format!("{network}-"))
                    || sandboxes.iter().any(|s| n.contains(&format!("-{s}-")))
            })
        });
    }
    for s in shim_sockets {
        match fs::remove_file(s) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                problems.push(format!("remove {}: {e}", s.display()));
            }
            _ => {}
        }
    }
    let result = with_record(|mut r| {
        let gone = |h: &String| h == id || !state::run_dir(h).exists();
        let was_real = !r.real.is_empty();
        r.holders.retain(|h| !gone(h));
        r.real.retain(|h| !gone(h));
        let mut p = Vec::new();
        if was_real && r.real.is_empty() {
            p.extend(restore(&r));
            r.sysctls.clear();
            r.absent.clear();
        }
        if !r.holders.is_empty() {
            return (Some(r), p);
        }
        let netns = Path::new(NETNS_DIR);
        let empty = fs::read_dir(netns).is_ok_and(|mut d| d.next().is_none());
        if r.netns_mount_absent && empty && is_mount_point(netns) {
            if !umount(netns, false) {
                p.push(format!("umount {NETNS_DIR}"));
            }
            let _ = fs::remove_dir(netns);
        }
        (None, p)
    });
    match result {
        Ok(p) => problems.extend(p),
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

/// Restores the settings and removes the shared directories recorded in `r`.
fn restore(r: &HostRecord) -> Vec<String> {
    let mut p = Vec::new();
    {
        for (k, v) in &r.sysctls {
            let path = Path::new("/proc/sys").join(k);
            if let Err(e) = fs::write(&path, v) {
                p.push(format!("restore {}={v}: {e}", path.display()));
            }
        }
        // The device-plugin socket is rewritten by every kubelet; the last one's is ours.
        let _ = fs::remove_file("/var/lib/kubelet/device-plugins/kubelet.sock");
        for dir in &r.absent {
            remove_if_empty_tree(dir, &mut p);
        }
    }
    p
}

fn remove_matching(dir: &str, problems: &mut Vec<String>, pick: impl Fn(&Path) -> bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        if pick(&p)
            && let Err(err) = fs::remove_file(&p)
        {
            problems.push(format!("remove {}: {err}", p.display()));
        }
    }
}

/// Removes `dir` if nothing but empty directories is left in it.
fn remove_if_empty_tree(dir: &Path, problems: &mut Vec<String>) {
    if !dir.exists() {
        return;
    }
    let mut dirs = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(entries) = fs::read_dir(&dirs[i]) {
            for e in entries.filter_map(Result::ok) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                } else {
                    problems.push(format!(
                        "{} is left: {} is not empty",
                        dir.display(),
                        e.path().display()
                    ));
                    return;
                }
            }
        }
        i += 1;
    }
    for d in dirs.iter().rev() {
        if let Err(e) = fs::remove_dir(d) {
            problems.push(format!("rmdir {}: {e}", d.display()));
        }
    }
}

/// The pod sandbox ids a node's containerd knows (its CRI plugin's sandbox directories).
pub fn sandbox_ids(containerd_root: &Path) -> Vec<String> {
    fs::read_dir(containerd_root.join("io.containerd.grpc.v1.cri/sandboxes"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() >= 12)
                .collect()
        })
        .unwrap_or_default()
}

/// The shim sockets a node's containerd recorded (`address` files of its task bundles), to be
/// removed once the shims are dead: containerd 1.6 puts them in the shared `/run/containerd/s`.
pub fn shim_sockets(containerd_state: &Path) -> Vec<PathBuf> {
    let tasks = containerd_state.join("io.containerd.runtime.v2.task");
    let mut out = Vec::new();
    let Ok(namespaces) = fs::read_dir(&tasks) else {
        return out;
    };
    for ns in namespaces.filter_map(Result::ok) {
        let Ok(bundles) = fs::read_dir(ns.path()) else {
            continue;
        };
        for b in bundles.filter_map(Result::ok) {
            if let Ok(addr) = fs::read_to_string(b.path().join("address")) {
                let path = addr.trim().trim_start_matches("unix://");
                if path.starts_with('/') {
                    out.push(PathBuf::from(path));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_gives_points_and_types() {
        let text = "\
36 25 0:31 / /sys/fs/cgroup/cpu rw,relatime shared:15 - cgroup cgroup rw,cpu\n\
37 25 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
90 70 0:50 / /tmp/ferrolb-lab/x/nodes/node-1/kubelet/pods/a\\040b rw - tmpfs tmpfs rw\n\
garbage line\n";
        assert_eq!(
            parse_mountinfo(text),
            [
                Mount {
                    point: "/sys/fs/cgroup/cpu".into(),
                    fstype: "cgroup".into()
                },
                Mount {
                    point: "/sys/fs/cgroup/unified".into(),
                    fstype: "cgroup2".into()
                },
                Mount {
                    point: "/tmp/ferrolb-lab/x/nodes/node-1/kubelet/pods/a b".into(),
                    fstype: "tmpfs".into()
                },
            ]
        );
    }

    #[test]
    fn octal_escapes_are_decoded_and_lone_backslashes_kept() {
        assert_eq!(unescape_octal(r"a\040b\134c"), r"a b\c");
        assert_eq!(unescape_octal(r"a\04"), r"a\04");
        assert_eq!(unescape_octal(r"end\"), r"end\");
    }

    #[test]
    fn shim_sockets_come_from_task_address_files() {
        let dir = std::env::temp_dir().join(format!("flb-shim-test-{}", std::process::id()));
        let bundle = dir.join("io.containerd.runtime.v2.task/k8s.io/abc");
        fs::create_dir_all(&bundle).expect("dir");
        fs::write(bundle.join("address"), "unix:///run/containerd/s/0123\n").expect("write");
        let got = shim_sockets(&dir);
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(got, [PathBuf::from("/run/containerd/s/0123")]);
    }
}
