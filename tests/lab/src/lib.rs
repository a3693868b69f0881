//! ferrolb's lab: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) and nodes as Linux network namespaces on one LAN
//! bridge, each with its own containerd and kubelet so pods really run, all on this machine,
//! for ferrolb's end-to-end tests.
//!
//! This crate root only wires modules together and re-exports the public API; it owns no
//! logic. Start with [`Lab::up`]. Nothing here touches the host network namespace: hosts are
//! namespaces named `<id>-<host>`, and the host side reaches the API server through a relay
//! pair on 127.0.0.1 and a Unix socket.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferrolb_lab::LabError> {
//! let lab = ferrolb_lab::Lab::up(ferrolb_lab::LabOptions { nodes: 2, ..Default::default() }).await?;
//! let out = lab.exec("client", &["ping", "-c1", "198.51.100.11"])?;
//! assert!(out.status.success());
//! lab.down();
//! # Ok(()) }
//! ```

pub mod certs;
pub mod cli;
pub mod controlplane;
pub mod host;
pub mod image;
pub mod kubeconfig;
pub mod lab;
pub mod node;
pub mod plan;
pub mod process;
pub mod relay;
pub mod router;
pub mod state;
pub mod teardown;
pub mod tools;

pub use controlplane::ProxyMode;
pub use lab::{Lab, LabError, LabOptions, client_for};
pub use plan::{LabHost, Plan};
pub use process::{LabProcess, Signal};
pub use router::{BirdConfig, BirdPeer, Router};
pub use state::LabState;
pub use teardown::TeardownReport;
