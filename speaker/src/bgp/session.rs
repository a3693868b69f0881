//! One BGP session's task: drives a `ferrolb_speaker_core::bgp::Session` with the TCP
//! connection, the clock and the manager's commands, and reports what happened.
//!
//! Owns the connection (through [`super::socket`]), the next hops it derives from the socket
//! and the interface table, and the session's metrics. It decides nothing about BGP: every
//! protocol decision is the core session's; every decision about routes is
//! [`super::decide`]'s. It ends when the session is stopped and idle, or when the manager
//! drops its command channel.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use ferrolb_runtime::Metrics;
use ferrolb_speaker_core::bgp::session::Unannounced;
use ferrolb_speaker_core::bgp::{
    Action, Closed, Config, Event, GracefulRestartConfig, MessageType, Negotiated, NextHops,
    Prefix, RouteAttrs, Session, State, Stop,
};
use futures::Future;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use super::decide::SessionSpec;
use super::metrics as m;
use super::socket::{self, ConnectOpts, SocketError};
use crate::netif::IfaceTable;

/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the manager tells a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The complete routes to announce.
    Routes(BTreeMap<Prefix, RouteAttrs>),
    /// Stop administratively.
    Stop(Stop),
    /// BFD declared the path down.
    BfdDown,
}

/// A session's state as the manager publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// RFC 4271 state.
    pub state: Option<State>,
    /// Our end of the connection.
    pub local: Option<SocketAddr>,
    /// When the session became Established, while it is.
    pub established: Option<SystemTime>,
    /// What was negotiated, while Established.
    pub negotiated: Option<Negotiated>,
    /// Prefixes announced now.
    pub advertised: Vec<Prefix>,
    /// Desired prefixes not announced, with why.
    pub unannounced: Vec<(Prefix, Unannounced)>,
    /// The last failure in words, and when.
    pub last_error: Option<(String, SystemTime)>,
    /// Times the session left Established.
    pub flaps: u64,
    /// The task has ended.
    pub ended: bool,
}

/// Where next hops for the other family and link-local addresses come from.
#[derive(Debug, Clone)]
pub struct NextHopSource {
    /// The interface table.
    pub ifaces: watch::Receiver<IfaceTable>,
    /// This node's InternalIPs.
    pub node_ips: Vec<IpAddr>,
}

impl NextHopSource {
    /// Next hops for a connection whose local end is `local`: that address for its family;
    /// for the other family the node's InternalIP of it (else a global address of the
    /// interface holding `local`); for IPv6 to a directly connected peer also the link-local
    /// address of that interface.
    pub fn next_hops(&self, local: IpAddr, multihop: bool) -> NextHops {
        let table = self.ifaces.borrow();
        let iface = table
            .values()
            .find(|i| i.addrs.iter().any(|(a, _)| *a == local));
        let global_v6 = |i: &crate::netif::Iface| {
            i.addrs.iter().find_map(|(a, _)| match a {
                IpAddr::V6(v6) if !v6.is_unicast_link_local() && !v6.is_loopback() => Some(*v6),
                _ => None,
            })
        };
        let node_v4 = self.node_ips.iter().find_map(|ip| match ip {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        });
        let node_v6 = self.node_ips.iter().find_map(|ip| match ip {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        });
        match local {
            IpAddr::V4(a) => NextHops {
                ipv4: Some(a),
                ipv6: node_v6.or_else(|| iface.and_then(global_v6)),
                ipv6_link_local: None,
            },
            IpAddr::V6(a) => NextHops {
                ipv4: node_v4.or_else(|| {
                    iface.and_then(|i| {
                        i.addrs.iter().find_map(|(x, _)| match x {
                            IpAddr::V4(v4) => Some(*v4),
                            IpAddr::V6(_) => None,
                        })
                    })
                }),
                ipv6: Some(a),
                ipv6_link_local: if multihop {
                    None
                } else {
                    iface.and_then(|i| i.link_local())
                },
            },
        }
    }
}

/// The core session's configuration for `spec`.
pub fn core_config(spec: &SessionSpec, restarting: bool) -> Config {
    let mut c = Config::new(spec.local_as, spec.peer_as, spec.router_id);
    c.hold_time = spec.hold_time;
    c.keepalive = spec.keepalive;
    c.families = spec.families.clone();
    c.connect_timeout = CONNECT_TIMEOUT;
    c.backoff_max = spec.backoff_max.max(c.backoff_initial);
    c.graceful_restart = spec.graceful_restart.map(|t| GracefulRestartConfig {
        restart_time: t,
        restarting,
    });
    c
}

type Connecting = Pin<Box<dyn Future<Output = Result<TcpStream, SocketError>> + Send>>;

struct Conn {
    read: OwnedReadHalf,
    write: BufWriter<OwnedWriteHalf>,
}

struct Task {
    spec: SessionSpec,
    session: Session,
    conn: Option<Conn>,
    connecting: Option<Connecting>,
    report: Report,
    /// The last report sent, so only changes go out.
    sent: Option<Report>,
    reports: mpsc::UnboundedSender<(String, Report)>,
    hops: NextHopSource,
    metrics: Metrics,
}

/// Runs one session until it is stopped and idle, or `commands` closes (which stops it as for
/// a planned restart). Every change of its [`Report`] goes to `reports` with the peer's name;
/// the last one has `ended` set.
pub async fn run(
    spec: SessionSpec,
    restarting: bool,
    seed: u64,
    mut commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::UnboundedSender<(String, Report)>,
    hops: NextHopSource,
    metrics: Metrics,
) {
    let session = Session::new(core_config(&spec, restarting), seed);
    let mut t = Task {
        spec,
        session,
        conn: None,
        connecting: None,
        report: Report::default(),
        sent: None,
        reports,
        hops,
        metrics,
    };
    let peer = t.spec.peer.clone();
    t.metrics
        .set(m::SESSION_UP, m::SESSION_UP_HELP, &[("peer", &peer)], 0.0);
    t.feed(Event::Start).await;
    let mut buf = vec![0u8; 65536];
    loop {
        if t.session.is_stopping() && t.session.state() == State::Idle && t.conn.is_none() {
            break;
        }
        let deadline = t.session.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        let (connecting_ref, conn_ref) = (&mut t.connecting, &mut t.conn);
        let connecting = async {
            match connecting_ref.as_mut() {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        };
        let reading = async {
            match conn_ref.as_mut() {
                Some(c) => c.read.read(&mut buf).await,
                None => std::future::pending().await,
            }
        };
        enum Woke {
            Timeout,
            Connected(Result<TcpStream, SocketError>),
            Read(std::io::Result<usize>),
            Command(Option<Command>),
        }
        let woke = tokio::select! {
            _ = sleep => Woke::Timeout,
            r = connecting => Woke::Connected(r),
            r = reading => Woke::Read(r),
            c = commands.recv() => Woke::Command(c),
        };
        match woke {
            Woke::Timeout => t.feed(Event::Timeout).await,
            Woke::Connected(r) => {
                t.connecting = None;
                match r {
                    Ok(stream) => t.on_connected(stream).await,
                    Err(e) => {
                        t.error(e.to_string());
                        t.metrics.inc(
                            m::CONNECT_ERRORS,
                            m::CONNECT_ERRORS_HELP,
                            &[("peer", &peer), ("reason", e.as_str())],
                            1.0,
                        );
                        t.feed(Event::ConnectFailed).await;
                    }
                }
            }
            Woke::Read(Ok(0)) | Woke::Read(Err(_)) => {
                t.conn = None;
                t.feed(Event::Closed).await;
            }
            Woke::Read(Ok(n)) => {
                let bytes = buf.get(..n).unwrap_or_default().to_vec();
                t.feed(Event::Received(&bytes)).await;
            }
            Woke::Command(Some(Command::Routes(r))) => t.feed(Event::Routes(r)).await,
            Woke::Command(Some(Command::Stop(s))) => t.feed(Event::Stop(s)).await,
            Woke::Command(Some(Command::BfdDown)) => t.feed(Event::BfdDown).await,
            Woke::Command(None) => {
                // The manager is gone: behave as for a planned restart, once.
                if !t.session.is_stopping() {
                    t.feed(Event::Stop(Stop::Restart {
                        message: "speaker stopping".into(),
                    }))
                    .await;
                } else {
                    break;
                }
            }
        }
    }
    t.conn = None;
    t.report.ended = true;
    t.report.state = Some(t.session.state());
    t.metrics
        .set(m::SESSION_UP, m::SESSION_UP_HELP, &[("peer", &peer)], 0.0);
    t.metrics
        .set(m::PREFIXES, m::PREFIXES_HELP, &[("peer", &peer)], 0.0);
    let _ = t.reports.send((peer, t.report.clone()));
}

impl Task {
    async fn on_connected(&mut self, stream: TcpStream) {
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                self.error(format!("connected socket has no local address: {e}"));
                self.feed(Event::ConnectFailed).await;
                return;
            }
        };
        let (read, write) = stream.into_split();
        self.conn = Some(Conn {
            read,
            write: BufWriter::new(write),
        });
        self.report.local = Some(local);
        let hops = self.hops.next_hops(local.ip(), self.spec.multihop);
        self.feed(Event::Connected(hops)).await;
    }

    fn error(&mut self, words: String) {
        tracing::info!(peer = %self.spec.peer, error = %words, "BGP session");
        self.report.last_error = Some((words, SystemTime::now()));
    }

    /// Feeds an event and carries out the actions.
    async fn feed(&mut self, ev: Event<'_>) {
        let actions = self.session.handle(Instant::now(), ev);
        self.perform(actions).await;
        self.publish();
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        let mut wrote = false;
        for a in actions {
            match a {
                Action::Connect => {
                    let opts = ConnectOpts {
                        peer: self.spec.address,
                        source: self.spec.source,
                        password: self.spec.password.clone(),
                        ttl: connect_ttl(&self.spec),
                        timeout: CONNECT_TIMEOUT,
                    };
                    self.connecting = Some(Box::pin(async move { socket::connect(&opts).await }));
                }
                Action::Send { kind, bytes } => {
                    self.count_sent(kind, &bytes);
                    if let Some(c) = self.conn.as_mut() {
                        if c.write.write_all(&bytes).await.is_err() {
                            // The read side sees the failure next and reports Closed.
                            continue;
                        }
                        wrote = true;
                    }
                }
                Action::Close => {
                    if let Some(mut c) = self.conn.take() {
                        let _ = c.write.flush().await;
                        let _ = c.write.shutdown().await;
                    }
                    self.connecting = None;
                    wrote = false;
                }
                Action::Established(n) => {
                    if wrote && let Some(c) = self.conn.as_mut() {
                        let _ = c.write.flush().await;
                        wrote = false;
                    }
                    self.on_established(n);
                }
                Action::Closed(c) => self.on_closed(c),
            }
        }
        if wrote && let Some(c) = self.conn.as_mut() {
            let _ = c.write.flush().await;
        }
    }

    fn on_established(&mut self, n: Negotiated) {
        let peer = self.spec.peer.clone();
        tracing::info!(peer = %peer, peer_as = n.peer_as, hold = n.hold_time, graceful_restart = n.graceful_restart, "BGP session established");
        if n.hold_time > 0
            && let Some(c) = self.conn.as_ref()
        {
            let d = Duration::from_secs(u64::from(n.hold_time));
            // The write half shares the socket; reunite is not needed to set an option.
            if let Err(e) =
                socket2::SockRef::from(c.write.get_ref().as_ref()).set_tcp_user_timeout(Some(d))
            {
                tracing::warn!(peer = %peer, error = %e, "cannot set TCP_USER_TIMEOUT");
            }
        }
        self.report.established = Some(SystemTime::now());
        self.report.negotiated = Some(n);
        self.metrics
            .set(m::SESSION_UP, m::SESSION_UP_HELP, &[("peer", &peer)], 1.0);
    }

    fn on_closed(&mut self, c: Closed) {
        let peer = self.spec.peer.clone();
        if c.was_established {
            self.report.flaps += 1;
            self.metrics
                .inc(m::FLAPS, m::FLAPS_HELP, &[("peer", &peer)], 1.0);
        }
        self.metrics
            .set(m::SESSION_UP, m::SESSION_UP_HELP, &[("peer", &peer)], 0.0);
        if let ferrolb_speaker_core::bgp::CloseReason::NotificationReceived(n) = &c.reason {
            let code = format!("{}/{}", n.code.code, n.code.subcode);
            self.metrics.inc(
                m::NOTIFICATIONS_RECEIVED,
                m::NOTIFICATIONS_RECEIVED_HELP,
                &[("peer", &peer), ("code", &code)],
                1.0,
            );
        }
        self.report.established = None;
        self.report.negotiated = None;
        self.report.local = None;
        // A connect failure already recorded its socket error, which says more.
        let connect = matches!(
            c.reason,
            ferrolb_speaker_core::bgp::CloseReason::ConnectFailed
        );
        if !(connect && self.report.last_error.is_some()) {
            if c.reason.is_administrative() {
                tracing::info!(peer = %peer, reason = %c, "BGP session closed");
            } else {
                self.error(c.to_string());
            }
        }
        self.conn = None;
    }

    fn count_sent(&self, kind: MessageType, bytes: &[u8]) {
        let peer = self.spec.peer.as_str();
        match kind {
            MessageType::Update => self.metrics.inc(
                m::UPDATES_SENT,
                m::UPDATES_SENT_HELP,
                &[("peer", peer)],
                1.0,
            ),
            MessageType::Notification => {
                // Code and subcode follow the 19-byte header.
                let code = match (bytes.get(19), bytes.get(20)) {
                    (Some(c), Some(s)) => format!("{c}/{s}"),
                    _ => "unknown".into(),
                };
                self.metrics.inc(
                    m::NOTIFICATIONS_SENT,
                    m::NOTIFICATIONS_SENT_HELP,
                    &[("peer", peer), ("code", &code)],
                    1.0,
                );
            }
            _ => {}
        }
    }

    fn publish(&mut self) {
        let s = &self.session;
        self.report.state = Some(s.state());
        self.report.advertised = s.adj_rib_out().routes().map(|(p, _)| *p).collect();
        self.report.unannounced = s.unannounced().to_vec();
        let peer = self.spec.peer.as_str();
        self.metrics.set(
            m::PREFIXES,
            m::PREFIXES_HELP,
            &[("peer", peer)],
            self.report.advertised.len() as f64,
        );
        self.metrics.set(
            m::UPDATES_RECEIVED,
            m::UPDATES_RECEIVED_HELP,
            &[("peer", peer)],
            s.stats().updates_received as f64,
        );
        if self.sent.as_ref() != Some(&self.report) {
            self.sent = Some(self.report.clone());
            let _ = self
                .reports
                .send((self.spec.peer.clone(), self.report.clone()));
        }
    }
}

/// The TTL of our segments: 1 for a directly connected eBGP peer (RFC 4271's default, so a
/// misrouted session cannot form), 255 with `ebgpMultiHop`, and 255 for iBGP, whose peers are
/// often not on the link (route reflectors).
pub fn connect_ttl(spec: &SessionSpec) -> u32 {
    let internal = match spec.peer_as {
        ferrolb_speaker_core::bgp::PeerAs::Exact(a) => a == spec.local_as,
        ferrolb_speaker_core::bgp::PeerAs::Internal => true,
        ferrolb_speaker_core::bgp::PeerAs::External => false,
    };
    if spec.multihop || internal { 255 } else { 1 }
}

/// The IPv6 link-local address of the interface holding `local`, for tests and logs.
pub fn link_local_of(table: &IfaceTable, local: IpAddr) -> Option<Ipv6Addr> {
    table
        .values()
        .find(|i| i.addrs.iter().any(|(a, _)| *a == local))
        .and_then(|i| i.link_local())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netif::Iface;

    fn table() -> IfaceTable {
        let mut t = IfaceTable::new();
        t.insert(
            "eth0".into(),
            Iface {
                index: 2,
                name: "eth0".into(),
                mac: None,
                up: true,
                addrs: vec![
                    ("198.51.100.11".parse().expect("ip"), 24),
                    ("2001:db8::11".parse().expect("ip"), 64),
                    ("fe80::fb:ff:fe00:b".parse().expect("ip"), 64),
                ],
            },
        );
        t
    }

    #[test]
    fn ttl_is_one_only_for_direct_ebgp() {
        let mut spec = SessionSpec {
            peer: "tor".into(),
            peer_uid: None,
            address: "198.51.100.1:179".parse().expect("addr"),
            source: None,
            local_as: 64512,
            peer_as: ferrolb_speaker_core::bgp::PeerAs::Exact(64513),
            router_id: "198.51.100.11".parse().expect("ip"),
            hold_time: 90,
            keepalive: None,
            backoff_max: Duration::from_secs(30),
            password: None,
            graceful_restart: None,
            multihop: false,
            families: vec![],
            bfd: None,
        };
        assert_eq!(connect_ttl(&spec), 1);
        spec.multihop = true;
        assert_eq!(connect_ttl(&spec), 255);
        spec.multihop = false;
        spec.peer_as = ferrolb_speaker_core::bgp::PeerAs::Exact(64512);
        assert_eq!(connect_ttl(&spec), 255, "iBGP");
        spec.peer_as = ferrolb_speaker_core::bgp::PeerAs::External;
        assert_eq!(connect_ttl(&spec), 1);
        let c = core_config(&spec, true);
        assert_eq!(c.hold_time, 90);
        assert_eq!(c.graceful_restart, None);
    }

    #[test]
    fn next_hops_per_family() {
        let (_tx, rx) = watch::channel(table());
        let src = NextHopSource {
            ifaces: rx,
            node_ips: vec!["198.51.100.11".parse().expect("ip")],
        };
        let v4 = src.next_hops("198.51.100.11".parse().expect("ip"), false);
        assert_eq!(v4.ipv4, Some("198.51.100.11".parse().expect("ip")));
        assert_eq!(v4.ipv6, Some("2001:db8::11".parse().expect("ip")));
        assert_eq!(v4.ipv6_link_local, None);
        let v6 = src.next_hops("2001:db8::11".parse().expect("ip"), false);
        assert_eq!(v6.ipv6, Some("2001:db8::11".parse().expect("ip")));
        assert_eq!(
            v6.ipv6_link_local,
            Some("fe80::fb:ff:fe00:b".parse().expect("ip"))
        );
        assert_eq!(v6.ipv4, Some("198.51.100.11".parse().expect("ip")));
        let multi = src.next_hops("2001:db8::11".parse().expect("ip"), true);
        assert_eq!(multi.ipv6_link_local, None);
        assert_eq!(
            link_local_of(&table(), "2001:db8::11".parse().expect("ip")),
            Some("fe80::fb:ff:fe00:b".parse().expect("ip"))
        );
    }
}
