//! What ferrolb's binaries share at run time and nothing else: the common flags and logging
//! setup, a Kubernetes client with clear errors, a small Prometheus registry, the HTTP endpoint
//! for `/metrics`, `/healthz` and `/readyz`, and the event recorder ([`events`]).
//!
//! It must not decide anything about IPs or announcing, and holds no CRD types (those are
//! `ferrolb-crds`'). Kept dependency-free beyond tokio, tracing and the Kubernetes client: a
//! metrics endpoint is a few lines of HTTP/1.0, and this way the footprint stays small.

pub mod events;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags both binaries take, flattened into each one's `Args`. Every flag can also be set with
/// a `FERROLB_*` environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Kubeconfig to use; default: in-cluster configuration, then KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "FERROLB_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// spec.loadBalancerClass served by this ferrolb.
    #[arg(long, env = "FERROLB_LB_CLASS", default_value = "ferrolb.io/lb")]
    pub lb_class: String,

    /// Ignore Services without a loadBalancerClass (when another load balancer serves those).
    #[arg(long, env = "FERROLB_IGNORE_CLASSLESS")]
    pub ignore_classless: bool,

    /// Log level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG overrides it.
    #[arg(long, env = "FERROLB_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "FERROLB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides `level` when set.
pub fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only for a person at a terminal: `kubectl logs` and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Why no Kubernetes client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or used.
    #[error("cannot use kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    /// Neither in-cluster config nor a kubeconfig was found.
    #[error(
        "no Kubernetes configuration: not running in a cluster and no kubeconfig found ({0}); pass --kubeconfig or set KUBECONFIG"
    )]
    Infer(kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("cannot build a Kubernetes client: {0}")]
    Build(kube::Error),
}

/// A client from `kubeconfig` if given, else in-cluster configuration, else `KUBECONFIG`/`~/.kube/config`.
pub async fn kube_client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                ClientError::Kubeconfig {
                    path: path.clone(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(ClientError::Infer)?,
    };
    kube::Client::try_from(config).map_err(ClientError::Build)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricKind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct MetricFamily {
    help: &'static str,
    kind: MetricKind,
    values: BTreeMap<String, f64>,
}

/// A tiny Prometheus registry: counters and gauges with labels, rendered in the text format.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<BTreeMap<&'static str, MetricFamily>>>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

impl Metrics {
    fn with(
        &self,
        name: &'static str,
        help: &'static str,
        kind: MetricKind,
        f: impl FnOnce(&mut BTreeMap<String, f64>),
    ) {
        // A poisoned lock only means another thread panicked mid-update; the numbers are still usable.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let fam = g.entry(name).or_insert_with(|| MetricFamily {
            help,
            kind,
            values: BTreeMap::new(),
        });
        f(&mut fam.values);
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], by: f64) {
        self.with(name, help, MetricKind::Counter, |v| {
            *v.entry(labels(l)).or_default() += by
        });
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, l: &[(&str, &str)], value: f64) {
        self.with(name, help, MetricKind::Gauge, |v| {
            v.insert(labels(l), value);
        });
    }

    /// Removes every series of a gauge (before re-setting a changing label set).
    pub fn clear(&self, name: &'static str) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = g.get_mut(name) {
            f.values.clear();
        }
    }

    /// Reads one series (for tests and benchmarks).
    pub fn get(&self, name: &str, l: &[(&str, &str)]) -> Option<f64> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.get(name).and_then(|f| f.values.get(&labels(l)).copied())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, fam) in g.iter() {
            let kind = match fam.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", fam.help);
            for (l, v) in &fam.values {
                let _ = writeln!(out, "{name}{l} {v}");
            }
        }
        out
    }
}

/// Liveness and readiness as the probes see them.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<std::sync::atomic::AtomicBool>,
}

impl Health {
    /// Marks the process ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready
            .store(ready, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the task is dropped.
pub async fn serve_http(listener: TcpListener, metrics: Metrics, health: Health) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let req = String::from_utf8_lossy(&buf[..n]);
            let path = req.split_whitespace().nth(1).unwrap_or("/");
            let (code, body) = match path {
                "/metrics" => ("200 OK", metrics.render()),
                "/healthz" | "/livez" => ("200 OK", "ok\n".to_string()),
                "/readyz" if health.is_ready() => ("200 OK", "ok\n".to_string()),
                "/readyz" => ("503 Service Unavailable", "not ready\n".to_string()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.0 {code}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

/// Binds the metrics address, with the address in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.inc("x_total", "things", &[("reason", "a\"b")], 2.0);
        m.set("y", "level", &[], 1.5);
        let text = m.render();
        assert!(text.contains("# TYPE x_total counter"), "{text}");
        assert!(text.contains("x_total{reason=\"a\\\"b\"} 2"), "{text}");
        assert!(text.contains("y 1.5"), "{text}");
        assert_eq!(m.get("x_total", &[("reason", "a\"b")]), Some(2.0));
    }

    #[tokio::test]
    async fn serves_probes_and_metrics() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let health = Health::default();
        let metrics = Metrics::default();
        metrics.set("up", "up", &[], 1.0);
        let server = tokio::spawn(serve_http(listener, metrics, health.clone()));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.0 503"));
        health.set_ready(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.0 200"));
        assert!(get("/metrics").await.contains("up 1"));
        server.abort();
    }
}
