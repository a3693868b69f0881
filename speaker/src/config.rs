//! Command-line flags of `ferrolb-speaker`. Every flag can also be set with a `FERROLB_*`
//! environment variable (the node name also from `NODE_NAME`, as the chart's downward API sets it).
//!
//! Owns parsing and defaults only; it must not open sockets or talk to the cluster.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use ferrolb_runtime::CommonArgs;
use ferrolb_speaker_core::membership;

/// Why a flag value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A duration without a unit, with a unit we do not know, or not a number.
    #[error("invalid duration {0:?}: want a number with ms or s, e.g. 25ms, 0.2s")]
    Duration(String),
    /// The node name is missing or empty.
    #[error(
        "no node name: pass --node-name or set NODE_NAME (the chart sets it from spec.nodeName)"
    )]
    EmptyNodeName,
    /// The timing flags contradict each other.
    #[error(
        "--dead-after ({dead_after:?}) must be at least twice --heartbeat-interval ({interval:?})"
    )]
    Timing {
        /// Heartbeat period.
        interval: Duration,
        /// Failure-detection silence.
        dead_after: Duration,
    },
    /// The suspicion is too short for the probe period.
    #[error(
        "--suspicion-timeout ({suspicion:?}) must be at least four times --heartbeat-interval ({interval:?})"
    )]
    Suspicion {
        /// Probe period.
        interval: Duration,
        /// Shortest suspicion.
        suspicion: Duration,
    },
    /// A rate or burst of zero.
    #[error("--{0} must be at least 1")]
    Zero(&'static str),
    /// The forwarder deny-list does not parse.
    #[error("--forwarder-deny-ports: {0}")]
    DenyList(String),
}

/// Parses `25ms`, `0.2s`, `1s`, `150` (milliseconds).
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Duration(s.to_string());
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1e-3)
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 || v * scale > 3600.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// ferrolb speaker: answers ARP and NDP for LoadBalancer IPs on the LAN and fails over in a few
/// hundred milliseconds.
#[derive(Debug, Clone, Parser)]
#[command(name = "ferrolb-speaker", version, about, long_about = None)]
pub struct Args {
    /// This node's name, as in its Node object (required; from FERROLB_NODE_NAME, else NODE_NAME).
    #[arg(long, env = "FERROLB_NODE_NAME")]
    pub node_name: Option<String>,

    /// Kubeconfig, class, logging: shared with the controller.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Interfaces to announce on (comma separated): an L2Advertisement without `interfaces` is
    /// announced on these (those up, with a MAC), one that names interfaces only on those also
    /// listed here. Empty: the advertisement's interfaces, else the interface holding the node's
    /// InternalIP plus those with an address on the IP's subnet.
    #[arg(long, env = "FERROLB_INTERFACES", value_delimiter = ',')]
    pub interfaces: Vec<String>,

    /// UDP port of the speakers' membership (SWIM probes and gossip, legacy heartbeats).
    #[arg(long, env = "FERROLB_MEMBERLIST_PORT", default_value_t = 7946)]
    pub memberlist_port: u16,

    /// Membership protocol: `swim` (probes one peer per period, gossip; per-node traffic does
    /// not grow with the cluster) or `legacy` (heartbeats to every peer, for a cluster where
    /// some speakers predate SWIM and the old rule is wanted everywhere). A SWIM speaker also
    /// talks to legacy peers in their protocol.
    #[arg(
        long,
        env = "FERROLB_MEMBERSHIP_PROTOCOL",
        value_enum,
        default_value = "swim"
    )]
    pub membership_protocol: MembershipProtocol,

    /// Membership period (e.g. 25ms): SWIM's probe period, and the heartbeat period toward
    /// legacy peers.
    #[arg(long, env = "FERROLB_HEARTBEAT_INTERVAL", default_value = "25ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// SWIM: shortest suspicion before a peer whose probe failed is declared dead (e.g.
    /// 325ms); a death is detected within about this plus 100 ms, and a live speaker stalled
    /// for less than this plus the probe timeout is never declared dead.
    #[arg(long, env = "FERROLB_SUSPICION_TIMEOUT", default_value = "325ms", value_parser = parse_duration)]
    pub suspicion_timeout: Duration,

    /// Legacy rule: silence after which a speaker judged by heartbeats is declared dead (e.g.
    /// 200ms). With SWIM it applies only to peers that speak the legacy protocol.
    #[arg(long, env = "FERROLB_DEAD_AFTER", default_value = "200ms", value_parser = parse_duration)]
    pub dead_after: Duration,

    /// Gratuitous ARP / unsolicited NA frames sent per IP on takeover.
    #[arg(long, env = "FERROLB_GARP_BURST", default_value_t = 3)]
    pub garp_burst: u32,

    /// Gratuitous frames per second across all IPs (what the switch tolerates).
    #[arg(long, env = "FERROLB_GARP_RATE", default_value_t = 200)]
    pub garp_rate: u32,

    /// BGP mode's flags.
    #[command(flatten)]
    pub bgp: crate::bgp::BgpArgs,

    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, env = "FERROLB_METRICS_ADDR", default_value = "0.0.0.0:7473")]
    pub metrics_addr: SocketAddr,

    /// Forwarder mode: ports never published on node addresses (ssh, DNS, BGP, etcd, the API
    /// server, the kubelet), as `22,53,2379-2380`. The speaker's own ports are always added.
    #[arg(
        long,
        env = "FERROLB_FORWARDER_DENY_PORTS",
        default_value = "22,53,179,2379-2380,6443,10248-10260"
    )]
    pub forwarder_deny_ports: String,
}

/// `--membership-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MembershipProtocol {
    /// SWIM with Lifeguard (version 3).
    Swim,
    /// Heartbeats to every peer (version 2).
    Legacy,
}

impl Args {
    /// The membership configuration the flags ask for. SWIM keeps the core's defaults except
    /// the period (its probe and ping timeouts shrink with a period shorter than they are),
    /// the suspicion (its upper end keeps its distance above the lower one) and the legacy
    /// rule's `dead_after`.
    pub fn membership_config(&self) -> membership::Config {
        let interval = self.heartbeat_interval;
        match self.membership_protocol {
            MembershipProtocol::Legacy => membership::Config::new(interval, self.dead_after),
            MembershipProtocol::Swim => {
                let d = membership::Config::default();
                let probe_timeout = d.probe_timeout.min(interval);
                let spread = d.suspicion_max.saturating_sub(d.suspicion_min);
                membership::Config {
                    interval,
                    dead_after: self.dead_after,
                    probe_timeout,
                    ping_timeout: d.ping_timeout.min(probe_timeout * 2 / 5),
                    suspicion_min: self.suspicion_timeout,
                    suspicion_max: self.suspicion_timeout + spread,
                    sync_interval: d.sync_interval.max(interval),
                    probe_slack: d.probe_slack.min(interval * 2 / 5),
                    ..d
                }
            }
        }
    }

    /// The node name: the flag, else `NODE_NAME` (what the chart's downward API sets).
    pub fn node_name(&self) -> Result<String, ConfigError> {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .ok_or(ConfigError::EmptyNodeName)
    }

    /// Checks what clap cannot: cross-flag constraints.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dead_after < self.heartbeat_interval.saturating_mul(2) {
            return Err(ConfigError::Timing {
                interval: self.heartbeat_interval,
                dead_after: self.dead_after,
            });
        }
        if self.membership_protocol == MembershipProtocol::Swim
            && self.suspicion_timeout < self.heartbeat_interval.saturating_mul(4)
        {
            return Err(ConfigError::Suspicion {
                interval: self.heartbeat_interval,
                suspicion: self.suspicion_timeout,
            });
        }
        if self.garp_burst == 0 {
            return Err(ConfigError::Zero("garp-burst"));
        }
        if self.garp_rate == 0 {
            return Err(ConfigError::Zero("garp-rate"));
        }
        crate::forwarder::check::parse_deny_list(&self.forwarder_deny_ports)
            .map_err(ConfigError::DenyList)?;
        Ok(())
    }

    /// Forwarder mode's deny-list: the flag's ports, and the speaker's own memberlist and
    /// metrics ports.
    pub fn denied(&self) -> Vec<crate::forwarder::check::Denied> {
        use crate::forwarder::check::{Denied, parse_deny_list};
        let mut out: Vec<Denied> = parse_deny_list(&self.forwarder_deny_ports)
            .unwrap_or_default()
            .into_iter()
            .map(|ports| Denied {
                ports,
                why: "on the deny-list (--forwarder-deny-ports)".into(),
            })
            .collect();
        out.push(Denied {
            ports: self.memberlist_port..=self.memberlist_port,
            why: "the speaker's memberlist port".into(),
        });
        let m = self.metrics_addr.port();
        out.push(Denied {
            ports: m..=m,
            why: "the speaker's metrics port".into(),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_follow_the_chart_contract() {
        let a = Args::try_parse_from(["ferrolb-speaker", "--node-name", "n1"]).expect("parses");
        assert_eq!(a.common.lb_class, "ferrolb.io/lb");
        assert_eq!(a.memberlist_port, 7946);
        assert_eq!(a.heartbeat_interval, Duration::from_millis(25));
        assert_eq!(a.dead_after, Duration::from_millis(200));
        assert_eq!(a.membership_protocol, MembershipProtocol::Swim);
        assert_eq!(a.suspicion_timeout, Duration::from_millis(325));
        assert_eq!(a.garp_burst, 3);
        assert_eq!(a.garp_rate, 200);
        assert_eq!(a.metrics_addr.port(), 7473);
        assert!(a.interfaces.is_empty() && !a.common.ignore_classless);
        assert_eq!(a.validate(), Ok(()));
    }

    #[test]
    fn interfaces_are_a_comma_list() {
        let a = Args::try_parse_from([
            "ferrolb-speaker",
            "--node-name=n1",
            "--interfaces=eth0,bond0",
        ])
        .expect("parses");
        assert_eq!(a.interfaces, ["eth0", "bond0"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("25ms"), Ok(Duration::from_millis(25)));
        assert_eq!(parse_duration("0.2s"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("150"), Ok(Duration::from_millis(150)));
        for bad in ["", "ms", "-1ms", "0s", "1h", "NaNs", "1e9s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn contradictory_timing_is_rejected() {
        let a = Args::try_parse_from([
            "ferrolb-speaker",
            "--node-name=n1",
            "--heartbeat-interval=100ms",
            "--dead-after=150ms",
        ])
        .expect("parses");
        assert!(matches!(a.validate(), Err(ConfigError::Timing { .. })));
        let z = Args::try_parse_from(["ferrolb-speaker", "--node-name=n1", "--garp-rate=0"])
            .expect("parses");
        assert_eq!(z.validate(), Err(ConfigError::Zero("garp-rate")));
    }

    #[test]
    fn default_membership_is_the_cores_swim() {
        let a = Args::try_parse_from(["ferrolb-speaker", "--node-name=n1"]).expect("parses");
        let c = a.membership_config();
        // The legacy rule of legacy peers keeps the flag's value.
        let d = membership::Config {
            dead_after: a.dead_after,
            ..Default::default()
        };
        assert_eq!(c, d);
        assert_eq!(c.declare_after(), Duration::from_millis(350));
    }

    #[test]
    fn membership_flags_map_onto_the_core() {
        let a = Args::try_parse_from([
            "ferrolb-speaker",
            "--node-name=n1",
            "--heartbeat-interval=50ms",
            "--dead-after=400ms",
            "--suspicion-timeout=500ms",
        ])
        .expect("parses");
        assert_eq!(a.validate(), Ok(()));
        let c = a.membership_config();
        assert_eq!(c.protocol, membership::Protocol::Swim);
        assert_eq!(c.interval, Duration::from_millis(50));
        assert_eq!(c.dead_after, Duration::from_millis(400));
        assert_eq!(c.suspicion_min, Duration::from_millis(500));
        assert_eq!(c.suspicion_max, Duration::from_millis(575));
        assert_eq!(c.declare_after(), Duration::from_millis(525));
        // A short period shrinks the probe timeouts inside it.
        let fast = Args::try_parse_from([
            "ferrolb-speaker",
            "--node-name=n1",
            "--heartbeat-interval=10ms",
            "--dead-after=100ms",
        ])
        .expect("parses")
        .membership_config();
        assert_eq!(fast.probe_timeout, Duration::from_millis(10));
        assert_eq!(fast.ping_timeout, Duration::from_millis(4));
        assert!(fast.ping_timeout < fast.probe_timeout && fast.probe_timeout <= fast.interval);
        let legacy = Args::try_parse_from([
            "ferrolb-speaker",
            "--node-name=n1",
            "--membership-protocol=legacy",
        ])
        .expect("parses")
        .membership_config();
        assert_eq!(
            legacy,
            membership::Config::new(Duration::from_millis(25), Duration::from_millis(200))
        );
        let short = Args::try_parse_from([
            "ferrolb-speaker",
            "--node-name=n1",
            "--heartbeat-interval=100ms",
            "--suspicion-timeout=300ms",
        ])
        .expect("parses");
        assert!(matches!(
            short.validate(),
            Err(ConfigError::Suspicion { .. })
        ));
    }
}
