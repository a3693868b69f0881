//! BGP mode's flags, flattened into the speaker's [`crate::config::Args`]. Every flag can also
//! be set from a `FERROLB_BGP_*` environment variable.
//!
//! Owns parsing and defaults only; it must not open sockets or talk to the cluster.

use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::config::parse_duration;

/// What a SIGTERM means for BGP sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnTerm {
    /// A restart if the Node stays (a DaemonSet rollout): graceful restart where the peer
    /// negotiated it. A shutdown (withdraw, drain, Cease) if the Node is leaving.
    Auto,
    /// Always a planned restart.
    Restart,
    /// Always a shutdown: withdraw, drain, Cease 6/2.
    Shutdown,
}

/// BGP mode's flags.
#[derive(Debug, Clone, Args)]
pub struct BgpArgs {
    /// Run BGP mode: peer with the BGPPeers that select this node and announce the Service IPs
    /// the BGPAdvertisements cover.
    #[arg(long = "bgp", env = "FERROLB_BGP")]
    pub enabled: bool,

    /// How long routes stay withdrawn before the session closes when this node leaves or a
    /// peer is removed, so the router moves new connections first (e.g. 3s).
    #[arg(long = "bgp-drain-delay", env = "FERROLB_BGP_DRAIN_DELAY", default_value = "3s", value_parser = parse_duration)]
    pub drain_delay: Duration,

    /// When this node leaves, first re-announce its routes with the GRACEFUL_SHUTDOWN community
    /// (65535:0, RFC 8326) for this long before withdrawing them (e.g. 2s). Off when unset.
    #[arg(long = "bgp-graceful-shutdown", env = "FERROLB_BGP_GRACEFUL_SHUTDOWN", value_parser = parse_duration)]
    pub graceful_shutdown: Option<Duration>,

    /// Treat a cordoned node (`spec.unschedulable`) as leaving: withdraw its routes. Off by
    /// default: nodes are cordoned for many reasons that do not stop their pods.
    #[arg(
        long = "bgp-withdraw-on-cordon",
        env = "FERROLB_BGP_WITHDRAW_ON_CORDON"
    )]
    pub withdraw_on_cordon: bool,

    /// What SIGTERM means for the sessions.
    #[arg(long = "bgp-on-term", env = "FERROLB_BGP_ON_TERM", value_enum, default_value_t = OnTerm::Auto)]
    pub on_term: OnTerm,

    /// Restart time offered to peers with graceful restart, seconds (at most 4095): how long
    /// they keep our routes while a speaker restarts.
    #[arg(
        long = "bgp-restart-time",
        env = "FERROLB_BGP_RESTART_TIME",
        default_value_t = 120
    )]
    pub restart_time: u16,

    /// UDP port BFD control packets are received on (RFC 5881: 3784).
    #[arg(
        long = "bgp-bfd-port",
        env = "FERROLB_BGP_BFD_PORT",
        default_value_t = 3784
    )]
    pub bfd_port: u16,

    /// The namespace of the Secrets BGPPeers' `passwordSecret` may name (the speaker reads
    /// Secrets there only). Default: `POD_NAMESPACE`, else `ferrolb-system`.
    #[arg(long = "bgp-secret-namespace", env = "FERROLB_BGP_SECRET_NAMESPACE")]
    pub secret_namespace: Option<String>,
}

impl BgpArgs {
    /// The Secrets' namespace in force.
    pub fn secret_namespace(&self) -> String {
        self.secret_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "ferrolb-system".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        bgp: BgpArgs,
    }

    #[test]
    fn defaults() {
        let t = T::try_parse_from(["t"]).expect("parses");
        assert!(!t.bgp.enabled);
        assert_eq!(t.bgp.drain_delay, Duration::from_secs(3));
        assert_eq!(t.bgp.graceful_shutdown, None);
        assert_eq!(t.bgp.on_term, OnTerm::Auto);
        assert_eq!((t.bgp.restart_time, t.bgp.bfd_port), (120, 3784));
        let t = T::try_parse_from([
            "t",
            "--bgp",
            "--bgp-drain-delay=500ms",
            "--bgp-graceful-shutdown=2s",
            "--bgp-on-term=shutdown",
            "--bgp-secret-namespace=lb",
        ])
        .expect("parses");
        assert!(t.bgp.enabled);
        assert_eq!(t.bgp.drain_delay, Duration::from_millis(500));
        assert_eq!(t.bgp.graceful_shutdown, Some(Duration::from_secs(2)));
        assert_eq!(t.bgp.on_term, OnTerm::Shutdown);
        assert_eq!(t.bgp.secret_namespace(), "lb");
    }
}
