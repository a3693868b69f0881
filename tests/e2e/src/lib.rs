//! Helpers shared by ferrolb's lab tests (the tests themselves live in `tests/`).
//!
//! They find the workspace's binaries, apply objects written as JSON, and wait for conditions with a
//! deadline, so every test reads as the scenario it checks.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

/// Path of a workspace binary built by `cargo build --workspace --bins` (debug profile, or
/// `FERROLB_PROFILE`). Panics with the command to run when it is missing: the test cannot proceed.
pub fn binary(name: &str) -> String {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"));
    let profile = std::env::var("FERROLB_PROFILE").unwrap_or_else(|_| "debug".into());
    let path = target.join(profile).join(name);
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
