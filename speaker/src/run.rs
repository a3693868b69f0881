//! Process wiring: flags, logging, the Kubernetes client, metrics and probes, and the tasks
//! (rtnetlink monitor, watches, status writer, engine) with their channels. Signals start the
//! graceful hand-over.
//!
//! Owns start-up checks and clear exit messages; it decides nothing about announcing.

use std::time::Duration;

use anyhow::Context as _;
use ferrolb_runtime::{self as runtime, Health, Metrics};
use tokio::sync::{mpsc, watch};

use crate::config::Args;
use crate::engine::{self, Channels, EngineConfig};
use crate::l2::L2Config;
use crate::plan::PlanConfig;

/// How long start-up waits for the API server before giving up with a clear message.
const API_CHECK: Duration = Duration::from_secs(15);

/// Runs the speaker until SIGTERM or SIGINT, then hands over and returns.
pub async fn run(args: Args) -> anyhow::Result<()> {
    runtime::init_tracing(&args.common.log_level, args.common.log_format);
    let node = args.node_name()?;
    args.validate()?;
    let client = runtime::kube_client(args.common.kubeconfig.as_ref()).await?;
    let version = tokio::time::timeout(API_CHECK, client.apiserver_version())
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {API_CHECK:?}"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .context("cannot reach the Kubernetes API server (check --kubeconfig and the network)")?;
    tracing::info!(server = %version.git_version, node = %node, lb_class = %args.common.lb_class, "ferrolb speaker starting");

    let metrics = Metrics::default();
    let health = Health::default();
    let listener = runtime::bind(args.metrics_addr).await?;
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /metrics, /healthz, /readyz");
    tokio::spawn(runtime::serve_http(
        listener,
        metrics.clone(),
        health.clone(),
    ));

    let (iface_tx, iface_rx) = watch::channel(Default::default());
    tokio::spawn(async move {
        // Without interface events the speaker would announce on stale interfaces: retry.
        for attempt in 1u32.. {
            if let Err(e) = crate::netif::monitor(iface_tx.clone()).await {
                tracing::error!(error = %e, attempt, "rtnetlink monitor failed; restarting in 1s");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let (plan_tx, plan_rx) = watch::channel(None);
    tokio::spawn(crate::watch::run(
        client.clone(),
        PlanConfig {
            lb_class: args.common.lb_class.clone(),
            ignore_classless: args.common.ignore_classless,
            self_node: node.clone(),
            bgp: args.bgp.enabled,
        },
        args.memberlist_port,
        plan_tx,
        metrics.clone(),
    ));

    tokio::spawn(crate::forwarder::run(
        client.clone(),
        crate::forwarder::Config {
            node: node.clone(),
            denied: args.denied(),
        },
        plan_rx.clone(),
        iface_rx.clone(),
        metrics.clone(),
    ));

    let bgp_client = client.clone();
    let (status_tx, status_rx) = mpsc::unbounded_channel();
    let (failed_tx, failed_rx) = mpsc::unbounded_channel();
    tokio::spawn(crate::status::run(
        client,
        node.clone(),
        metrics.clone(),
        status_rx,
        failed_tx,
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
        }
        let _ = shutdown_tx.send(true);
    });

    // BGP mode runs beside the others; its graceful stop is awaited after the engine's.
    let bgp = args.bgp.enabled.then(|| {
        tokio::spawn(crate::bgp::run(
            bgp_client,
            crate::bgp::BgpConfig {
                node: node.clone(),
                plan: PlanConfig {
                    lb_class: args.common.lb_class.clone(),
                    ignore_classless: args.common.ignore_classless,
                    self_node: node.clone(),
                    bgp: true,
                },
                args: args.bgp.clone(),
            },
            plan_rx.clone(),
            iface_rx.clone(),
            shutdown_rx.clone(),
            metrics.clone(),
        ))
    });

    engine::run(
        EngineConfig {
            node,
            port: args.memberlist_port,
            membership: args.membership_config(),
            l2: L2Config {
                garp_burst: args.garp_burst,
                garp_rate: args.garp_rate,
                allowed_interfaces: args.interfaces.clone(),
            },
        },
        Channels {
            plans: plan_rx,
            ifaces: iface_rx,
            status: status_tx,
            status_failed: failed_rx,
            shutdown: shutdown_rx,
        },
        metrics,
        health,
    )
    .await?;
    if let Some(bgp) = bgp {
        // Bounded inside: AdminDown, drain and close waits all have deadlines.
        let _ = bgp.await;
    }
    Ok(())
}
