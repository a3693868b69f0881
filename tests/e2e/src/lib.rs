//! Helpers shared by ferrolb's lab tests and benchmarks (the tests themselves live in `tests/`).
//!
//! They find the workspace's binaries, pack them into the ferrolb image real lab nodes run, read
//! what a pod's containers logged from the kubelet's files and what the API server audited
//! ([`audit`]), wait for rollouts, apply objects written as JSON, and wait for conditions with a
//! deadline, so every test reads as the scenario it checks. They never start or stop anything in a lab themselves beyond the command asked for.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod audit;
pub mod etcd_load;
pub mod measure;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiResource, Discovery};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The CRDs as `crdgen` generates them (what the chart renders), for `kubectl apply -f`.
pub fn crds_file() -> PathBuf {
    workspace().join("charts/ferrolb/charts/crds/files/crds.yaml")
}

/// Applies ferrolb's CRDs to the lab and waits until the API server serves both.
pub fn install_crds(lab: &ferrolb_lab::Lab) -> anyhow::Result<()> {
    let crds = crds_file().display().to_string();
    stdout_of(
        "kubectl apply the CRDs",
        lab.kubectl(&["apply", "-f", &crds])?,
    )?;
    let wait = [
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/ipaddresspools.ferrolb.io",
        "crd/l2advertisements.ferrolb.io",
    ];
    stdout_of("kubectl wait for the CRDs", lab.kubectl(&wait)?)?;
    Ok(())
}

/// A process in the host's namespace, killed when dropped.
#[derive(Debug)]
pub struct HostProcess(pub std::process::Child);

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ferrolb-controller` on the host with the lab's admin kubeconfig and no leader
/// election, logging to the lab's `controller` log.
pub fn start_host_controller(lab: &ferrolb_lab::Lab) -> anyhow::Result<HostProcess> {
    use anyhow::Context as _;
    let log = std::fs::File::create(lab.log_path("controller"))?;
    let child = std::process::Command::new(binary("ferrolb-controller"))
        .args([
            "--kubeconfig",
            &lab.kubeconfig().display().to_string(),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start the controller")?;
    Ok(HostProcess(child))
}

/// Runs the lab's `helm` against it (its kubeconfig, and Helm's cache, configuration and data
/// under the lab's run directory, so nothing lands in the user's home) and returns its stdout
/// if it succeeded.
/// Runs `cmd` in the lab host `host` and returns its standard output; a non-zero exit is an
/// error naming the host, the command and its standard error.
pub fn exec_ok(lab: &ferrolb_lab::Lab, host: &str, cmd: &[&str]) -> anyhow::Result<String> {
    let out = lab.exec(host, cmd)?;
    anyhow::ensure!(
        out.status.success(),
        "{host}: {}: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

pub fn helm(lab: &ferrolb_lab::Lab, args: &[&str]) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let home = lab.run_dir().join("helm");
    let bin = lab.tools_bin().join("helm");
    let out = std::process::Command::new(&bin)
        .args(args)
        .env("KUBECONFIG", lab.kubeconfig())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .with_context(|| format!("run {}", bin.display()))?;
    stdout_of(&format!("helm {}", args.join(" ")), out)
}

/// A command's stdout and stderr as one text, for assertion messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A command's stdout if it succeeded; otherwise an error naming `what` with all it printed.
pub fn stdout_of(what: &str, out: std::process::Output) -> anyhow::Result<String> {
    anyhow::ensure!(out.status.success(), "{what} failed: {}", text(&out));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else the workspace's `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"))
}

/// The build profile whose binaries the lab runs: `FERROLB_PROFILE`, else `debug`.
pub fn profile() -> String {
    std::env::var("FERROLB_PROFILE").unwrap_or_else(|_| "debug".into())
}

/// Path of a workspace binary built by `cargo build --workspace --bins` (debug profile, or
/// `FERROLB_PROFILE`). Panics with the command to run when it is missing: the test cannot proceed.
pub fn binary(name: &str) -> String {
    let path = target_dir().join(profile()).join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `check` every 50 ms until it returns `Ok(Some(_))`. After `timeout` it fails naming
/// `what` and the last error `check` returned, so a scenario can report and go on.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!(": {e:#}"),
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}{last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Server-side applies objects given as JSON (any kind the API server knows), as `kubectl apply
/// --server-side` would.
pub async fn apply(client: &kube::Client, objects: &[serde_json::Value]) -> anyhow::Result<()> {
    let discovery = Discovery::new(client.clone()).run().await?;
    for obj in objects {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let (ar, caps): (ApiResource, _) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| anyhow::anyhow!("the API server does not serve {api_version} {kind}"))?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            _ => Api::all_with(client.clone(), &ar),
        };
        api.patch(
            name,
            &PatchParams::apply("ferrolb-e2e").force(),
            &Patch::Apply(obj),
        )
        .await?;
    }
    Ok(())
}

/// The image reference the chart runs by default: `ghcr.io/ferrolb/ferrolb:<workspace version>`
/// (the chart's appVersion is the workspace version).
pub fn chart_image() -> String {
    format!(
        "{}:{}",
        ferrolb_lab::image::FERROLB_REPOSITORY,
        env!("CARGO_PKG_VERSION")
    )
}

/// The ferrolb image for real lab nodes, as an OCI archive to pass in
/// [`ferrolb_lab::LabOptions::images`]: `ferrolb-controller` and `ferrolb-speaker` of
/// [`profile`], tagged [`chart_image`], so the chart's defaults run them (with
/// `image.pullPolicy=Never`: no registry is reachable).
///
/// Written to `target/e2e-images/ferrolb-<profile>.oci.tar` at most once per process, and kept
/// across runs while it is newer than both binaries. Several test processes may build it at once:
/// each writes its own file and renames it into place.
pub fn ferrolb_image() -> anyhow::Result<PathBuf> {
    static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_ferrolb_image().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_ferrolb_image() -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let profile = profile();
    let bin_dir = target_dir().join(&profile);
    let dir = target_dir().join("e2e-images");
    let out = dir.join(format!("ferrolb-{profile}.oci.tar"));
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for name in ["ferrolb-controller", "ferrolb-speaker"] {
        let bin = bin_dir.join(name);
        let t = mtime(&bin).with_context(|| {
            format!(
                "{} is missing: run `cargo build --workspace --bins` first",
                bin.display()
            )
        })?;
        newest = newest.max(t);
    }
    if mtime(&out).is_ok_and(|t| t >= newest) {
        return Ok(out);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!("ferrolb-{profile}.{}.oci.tar", std::process::id()));
    ferrolb_lab::image::debug_ferrolb_image(&bin_dir, env!("CARGO_PKG_VERSION"), &tmp)
        .with_context(|| format!("pack the ferrolb image from {}", bin_dir.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("rename to {}", out.display()))?;
    Ok(out)
}

/// What container `container` of pod `namespace/pod` wrote, read from the kubelet's log files
/// on disk (`<run>/nodes/<node>/pod-logs/<namespace>_<pod>_<uid>/<container>/`), so it can be
/// read while the pod's node is cut off or the API server is down. Every restart of the
/// container in order, each with its rotated files first; the CRI framing is removed
/// ([`cri_log_text`]). Fails if no node has logs of that pod.
pub fn pod_log(
    run_dir: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
) -> anyhow::Result<String> {
    let prefix = format!("{namespace}_{pod}_");
    let mut dirs = Vec::new();
    for node in std::fs::read_dir(run_dir.join("nodes"))?.flatten() {
        let Ok(pods) = std::fs::read_dir(node.path().join("pod-logs")) else {
            continue;
        };
        for d in pods.flatten() {
            if d.file_name().to_string_lossy().starts_with(&prefix) {
                dirs.push(d.path().join(container));
            }
        }
    }
    anyhow::ensure!(
        !dirs.is_empty(),
        "no node has logs of pod {namespace}/{pod} under {}",
        run_dir.join("nodes").display()
    );
    let mut files: Vec<((u32, bool, String), PathBuf)> = Vec::new();
    for d in &dirs {
        for f in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if let Some(key) = log_file_order(&name) {
                files.push((key, f.path()));
            }
        }
    }
    files.sort();
    let mut text = String::new();
    for (_, f) in files {
        // The kubelet may rotate a file between listing and reading it; what is gone is in the
        // rotated file read already or in the next one.
        if let Ok(raw) = std::fs::read_to_string(&f) {
            text.push_str(&cri_log_text(&raw));
        }
    }
    Ok(text)
}

/// Where a file of a container's log directory goes in reading order: `<restart>.log` after
/// its rotated predecessors `<restart>.log.<timestamp>`; compressed rotations are left out.
fn log_file_order(name: &str) -> Option<(u32, bool, String)> {
    let (restart, rest) = name.split_once(".log")?;
    let restart: u32 = restart.parse().ok()?;
    if rest.is_empty() {
        Some((restart, true, String::new()))
    } else {
        let stamp = rest.strip_prefix('.')?;
        (!stamp.ends_with(".gz")).then(|| (restart, false, stamp.to_string()))
    }
}

/// The lines a container wrote, from the CRI log format the kubelet's files use:
/// `<RFC 3339 time> <stdout|stderr> <F|P> <text>` per line, where `P` marks a part of a longer
/// line that the next record continues. Lines that do not parse are kept as they are.
pub fn cri_log_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for record in raw.lines() {
        let mut parts = record.splitn(4, ' ');
        let (_time, stream, tag) = (parts.next(), parts.next(), parts.next());
        let text = parts.next().unwrap_or_default();
        match (stream, tag) {
            (Some("stdout" | "stderr"), Some("P")) => out.push_str(text),
            (Some("stdout" | "stderr"), Some(_)) => {
                out.push_str(text);
                out.push('\n');
            }
            _ => {
                out.push_str(record);
                out.push('\n');
            }
        }
    }
    out
}

/// Waits until `workload` (`deployment/<name>` or `daemonset/<name>`) in `namespace` has rolled
/// out: every replica updated, available, and no old one left (`kubectl rollout status`).
pub fn wait_rollout(
    lab: &ferrolb_lab::Lab,
    namespace: &str,
    workload: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let timeout = format!("--timeout={}s", timeout.as_secs().max(1));
    stdout_of(
        &format!("rollout of {namespace}/{workload}"),
        lab.kubectl(&["rollout", "status", "-n", namespace, workload, &timeout])?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_records_become_the_containers_lines() {
        let raw = "2026-12-07T08:30:48.125402761Z stdout F 2026-12-07T08:30:48.125282Z  INFO starting\n\
                   2026-12-07T08:30:48.2Z stderr P first half, \n\
                   2026-12-07T08:30:48.3Z stderr F second half\n\
                   2026-12-07T08:30:48.4Z stdout F \n\
                   not a record\n";
        assert_eq!(
            cri_log_text(raw),
            "2026-12-07T08:30:48.125282Z  INFO starting\nfirst half, second half\n\nnot a record\n"
        );
    }

    #[test]
    fn log_files_are_read_oldest_first() {
        let mut names = vec![
            "1.log",
            "0.log",
            "0.log.20261207-083000",
            "0.log.20261207-082000",
            "0.log.20261207-081000.gz",
            "notes.txt",
        ];
        names.sort_by_key(|n| log_file_order(n));
        let kept: Vec<&str> = names
            .into_iter()
            .filter(|n| log_file_order(n).is_some())
            .collect();
        assert_eq!(
            kept,
            [
                "0.log.20261207-082000",
                "0.log.20261207-083000",
                "0.log",
                "1.log"
            ]
        );
    }
}
