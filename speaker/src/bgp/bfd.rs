//! The BFD shell: one OS thread owning every BFD session of this node, with its own UDP
//! sockets, so a busy tokio runtime cannot delay a control packet.
//!
//! Owns the receive sockets (UDP 3784 for single hop, 4784 for multihop, one per family, with
//! the received TTL / Hop Limit), one sending socket per session (TTL 255, a source port in
//! 49152–65535, RFC 5881 §4), demultiplexing (by Your Discriminator, else by the sender's
//! address), and the `ferrolb_speaker_bgp_bfd_*` metrics. Every protocol decision is the core
//! session's (`ferrolb_speaker_core::bfd`). It talks to the manager through channels only:
//! commands in (a std channel it polls), state changes out (a tokio channel).
//!
//! The thread never blocks on anything but `poll(2)`, whose timeout is the earliest session
//! deadline, capped at [`COMMAND_POLL`] so commands are picked up promptly.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use ferrolb_runtime::Metrics;
use ferrolb_speaker_core::bfd::{
    self, Action, BfdState, ControlPacket, Diagnostic, Event, Hops, MULTI_HOP_PORT, Session,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::mpsc;

use super::metrics as m;

/// Longest wait before the thread looks at its command channel again.
pub const COMMAND_POLL: Duration = Duration::from_millis(20);

/// Why the BFD thread cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    /// A receive socket could not be opened.
    #[error("cannot open the BFD socket on {addr}: {source}")]
    Socket {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The thread could not be spawned.
    #[error("cannot start the BFD thread: {0}")]
    Thread(std::io::Error),
}

/// What the manager asks of the BFD thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run a session with `remote` for BGPPeer `peer` (replacing one with other settings).
    Add {
        /// The BGPPeer.
        peer: String,
        /// The router's address.
        remote: IpAddr,
        /// Settings.
        config: bfd::Config,
    },
    /// Take the session administratively down, keep sending AdminDown for a detection time,
    /// then drop it.
    Remove {
        /// The BGPPeer.
        peer: String,
    },
    /// A planned restart: every session AdminDown; [`Report::AdminDownDone`] when the peers
    /// have seen it for a detection time.
    AdminDownAll,
}

/// What the BFD thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A session changed state.
    State {
        /// The BGPPeer.
        peer: String,
        /// New state.
        state: BfdState,
        /// An Up session went Down for a path failure: the BGP session must go.
        failure: bool,
        /// Our diagnostic.
        diag: Diagnostic,
    },
    /// After [`Command::AdminDownAll`]: every session has sent AdminDown long enough.
    AdminDownDone,
}

/// The thread's handle.
#[derive(Debug)]
pub struct Handle {
    tx: std_mpsc::Sender<Command>,
}

impl Handle {
    /// Sends a command; false if the thread is gone.
    pub fn send(&self, c: Command) -> bool {
        self.tx.send(c).is_ok()
    }
}

struct Entry {
    session: Session,
    remote: IpAddr,
    port: u16,
    tx: UdpSocket,
    /// Being removed: drop once AdminDown went out long enough.
    removing: bool,
    last_state: BfdState,
}

struct Thread {
    /// Single-hop port: listened on and sent to.
    single_port: u16,
    sessions: BTreeMap<String, Entry>,
    reports: mpsc::UnboundedSender<Report>,
    metrics: Metrics,
    admin_all: bool,
    admin_done_sent: bool,
    rng: std::collections::hash_map::RandomState,
    counter: u64,
}

fn random(rs: &std::collections::hash_map::RandomState, counter: u64) -> u64 {
    let mut h = rs.build_hasher();
    h.write_u64(counter);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn rx_socket(addr: SocketAddr) -> Result<Socket, BfdError> {
    let err = |source| BfdError::Socket { addr, source };
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    if addr.is_ipv6() {
        s.set_only_v6(true).map_err(err)?;
        setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true)
            .map_err(|e| err(std::io::Error::from(e)))?;
    } else {
        setsockopt(&s, sockopt::Ipv4RecvTtl, &true).map_err(|e| err(std::io::Error::from(e)))?;
    }
    s.set_reuse_address(true).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    Ok(s)
}

/// Starts the thread with receive sockets on `port` (single hop: 3784 unless a lab needs
/// another; packets go to the same port on the peer) and 4784 (multihop), both families. A family whose socket cannot be opened (no IPv6 on the node) is logged and
/// skipped; if no socket opens, the thread does not start.
pub fn spawn(
    port: u16,
    reports: mpsc::UnboundedSender<Report>,
    metrics: Metrics,
) -> Result<Handle, BfdError> {
    let mut sockets = Vec::new();
    let mut first_err = None;
    for addr in [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), MULTI_HOP_PORT),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), MULTI_HOP_PORT),
    ] {
        match rx_socket(addr) {
            Ok(s) => sockets.push(s),
            Err(e) => {
                tracing::warn!(error = %e, "BFD receive socket not available");
                first_err.get_or_insert(e);
            }
        }
    }
    if sockets.is_empty()
        && let Some(e) = first_err
    {
        return Err(e);
    }
    let (tx, rx) = std_mpsc::channel();
    let mut t = Thread {
        single_port: port,
        sessions: BTreeMap::new(),
        reports,
        metrics,
        admin_all: false,
        admin_done_sent: false,
        rng: std::collections::hash_map::RandomState::new(),
        counter: 0,
    };
    std::thread::Builder::new()
        .name("bfd".into())
        .spawn(move || t.run(sockets, rx))
        .map_err(BfdError::Thread)?;
    Ok(Handle { tx })
}

/// A sending socket with TTL 255 and a source port in 49152–65535.
fn tx_socket(remote: IpAddr, seed: u64) -> std::io::Result<UdpSocket> {
    let domain = if remote.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if remote.is_ipv4() {
        s.set_ttl_v4(255)?;
    } else {
        s.set_unicast_hops_v6(255)?;
    }
    s.set_nonblocking(true)?;
    let any = if remote.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let mut last = None;
    for i in 0..64u64 {
        let port = 49152 + ((seed.wrapping_add(i.wrapping_mul(7919))) % 16384) as u16;
        match s.bind(&SocketAddr::new(any, port).into()) {
            Ok(()) => return Ok(s.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free BFD source port")))
}

impl Thread {
    fn run(&mut self, sockets: Vec<Socket>, commands: std_mpsc::Receiver<Command>) {
        let mut buf = [0u8; 512];
        let mut cmsg = nix::cmsg_space!(libc::c_int);
        loop {
            loop {
                match commands.try_recv() {
                    Ok(c) => self.command(c),
                    Err(std_mpsc::TryRecvError::Empty) => break,
                    Err(std_mpsc::TryRecvError::Disconnected) => {
                        // The manager is gone; nothing more will be asked of us.
                        return;
                    }
                }
            }
            let now = Instant::now();
            let next = self
                .sessions
                .values()
                .filter_map(|e| e.session.poll_timeout())
                .min();
            let wait = next
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(COMMAND_POLL)
                .min(COMMAND_POLL);
            // Rounded up: a deadline 0.3 ms away must not turn into a busy loop of poll(0).
            let ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
            let mut fds: Vec<PollFd> = sockets
                .iter()
                .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                .collect();
            let _ = poll(&mut fds, PollTimeout::from(ms));
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
                .collect();
            drop(fds);
            for (s, ready) in sockets.iter().zip(ready) {
                if !ready {
                    continue;
                }
                // Bounded: at most this many datagrams per wake-up per socket.
                for _ in 0..64 {
                    let got = {
                        let mut iov = [IoSliceMut::new(&mut buf)];
                        match recvmsg::<SockaddrStorage>(
                            s.as_raw_fd(),
                            &mut iov,
                            Some(&mut cmsg),
                            MsgFlags::MSG_DONTWAIT,
                        ) {
                            Ok(msg) => {
                                let mut ttl = 0u8;
                                if let Ok(cm) = msg.cmsgs() {
                                    for c in cm {
                                        match c {
                                            ControlMessageOwned::Ipv4Ttl(t) => {
                                                ttl = u8::try_from(t).unwrap_or(0)
                                            }
                                            ControlMessageOwned::Ipv6HopLimit(h) => {
                                                ttl = u8::try_from(h).unwrap_or(0)
                                            }
                                            _ => {}
                                        }
                                    }
                                }
                                let src = msg.address.and_then(|a| {
                                    if let Some(v4) = a.as_sockaddr_in() {
                                        Some(IpAddr::V4(v4.ip()))
                                    } else {
                                        a.as_sockaddr_in6().map(|v6| {
                                            let ip = v6.ip();
                                            // A v4-mapped sender on a v6 socket is a v4 peer.
                                            ip.to_ipv4_mapped()
                                                .map(IpAddr::V4)
                                                .unwrap_or(IpAddr::V6(ip))
                                        })
                                    }
                                });
                                Some((msg.bytes, ttl, src))
                            }
                            Err(_) => None,
                        }
                    };
                    let Some((n, ttl, src)) = got else { break };
                    let bytes = buf.get(..n).unwrap_or_default().to_vec();
                    self.received(&bytes, ttl, src);
                }
            }
            self.timeouts();
            self.reap();
        }
    }

    fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Add {
                peer,
                remote,
                config,
            } => {
                if let Some(e) = self.sessions.get(&peer)
                    && e.remote == remote
                    && !e.removing
                {
                    if e.session.config() != config {
                        let actions = self
                            .sessions
                            .get_mut(&peer)
                            .map(|e| e.session.handle(now, Event::Reconfigure(config)))
                            .unwrap_or_default();
                        self.perform(&peer, actions);
                    }
                    return;
                }
                self.counter += 1;
                let seed = random(&self.rng, self.counter);
                let discr = (seed >> 32) as u32;
                let tx = match tx_socket(remote, seed) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(peer = %peer, %remote, error = %e, "cannot open a BFD sending socket");
                        return;
                    }
                };
                let port = match config.hops {
                    Hops::Single => self.single_port,
                    Hops::Multi { .. } => MULTI_HOP_PORT,
                };
                let session = Session::new(config, discr.max(1), now, seed);
                let mut config_admin = false;
                if self.admin_all {
                    config_admin = true;
                }
                self.sessions.insert(
                    peer.clone(),
                    Entry {
                        session,
                        remote,
                        port,
                        tx,
                        removing: false,
                        last_state: BfdState::Down,
                    },
                );
                self.report(&peer, BfdState::Down, false, Diagnostic::NONE);
                if config_admin {
                    self.admin_down(&peer, now);
                }
            }
            Command::Remove { peer } => {
                if let Some(e) = self.sessions.get_mut(&peer) {
                    e.removing = true;
                }
                self.admin_down(&peer, now);
            }
            Command::AdminDownAll => {
                self.admin_all = true;
                let peers: Vec<String> = self.sessions.keys().cloned().collect();
                for p in peers {
                    self.admin_down(&p, now);
                }
            }
        }
    }

    fn admin_down(&mut self, peer: &str, now: Instant) {
        let actions = self
            .sessions
            .get_mut(peer)
            .map(|e| {
                e.session
                    .handle(now, Event::AdminDown(Diagnostic::ADMINISTRATIVELY_DOWN))
            })
            .unwrap_or_default();
        self.perform(peer, actions);
    }

    fn received(&mut self, bytes: &[u8], ttl: u8, src: Option<IpAddr>) {
        let now = Instant::now();
        let your = ControlPacket::parse(bytes)
            .ok()
            .map(|p| p.your_discriminator);
        let peer = match your {
            Some(d) if d != 0 => self
                .sessions
                .iter()
                .find(|(_, e)| e.session.local_discriminator() == d)
                .map(|(p, _)| p.clone()),
            _ => src.and_then(|a| {
                self.sessions
                    .iter()
                    .find(|(_, e)| e.remote == a)
                    .map(|(p, _)| p.clone())
            }),
        };
        let Some(peer) = peer else {
            self.metrics.inc(
                m::BFD_DISCARDS,
                m::BFD_DISCARDS_HELP,
                &[("reason", "no_session")],
                1.0,
            );
            return;
        };
        let mut out = Vec::new();
        let result = self
            .sessions
            .get_mut(&peer)
            .map(|e| e.session.receive(now, bytes, ttl, &mut out));
        if let Some(Err(why)) = result {
            self.metrics.inc(
                m::BFD_DISCARDS,
                m::BFD_DISCARDS_HELP,
                &[("reason", why.as_str())],
                1.0,
            );
        }
        self.perform(&peer, out);
    }

    fn timeouts(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.session.poll_timeout().is_some_and(|t| t <= now))
            .map(|(p, _)| p.clone())
            .collect();
        for p in due {
            let actions = self
                .sessions
                .get_mut(&p)
                .map(|e| e.session.handle(now, Event::Timeout))
                .unwrap_or_default();
            self.perform(&p, actions);
        }
    }

    fn reap(&mut self) {
        let now = Instant::now();
        let before = self.sessions.len();
        let gone: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, e)| {
                e.removing && e.session.admin_down_complete_at().is_none_or(|t| t <= now)
            })
            .map(|(p, _)| p.clone())
            .collect();
        for p in gone {
            self.sessions.remove(&p);
            self.metrics
                .set(m::BFD_UP, m::BFD_UP_HELP, &[("peer", &p)], 0.0);
        }
        if self.admin_all && !self.admin_done_sent {
            let done = self
                .sessions
                .values()
                .all(|e| e.session.admin_down_complete_at().is_none_or(|t| t <= now));
            if done {
                self.admin_done_sent = true;
                let _ = self.reports.send(Report::AdminDownDone);
            }
        }
        let _ = before;
    }

    fn perform(&mut self, peer: &str, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(bytes) => {
                    if let Some(e) = self.sessions.get(peer) {
                        let _ = e.tx.send_to(&bytes, SocketAddr::new(e.remote, e.port));
                    }
                }
                Action::StateChanged(t) => {
                    if let Some(e) = self.sessions.get_mut(peer) {
                        e.last_state = t.to;
                    }
                    let failure = t.is_failure();
                    if failure {
                        self.metrics.inc(
                            m::BFD_DOWN,
                            m::BFD_DOWN_HELP,
                            &[("peer", peer), ("diag", t.diag.as_str())],
                            1.0,
                        );
                    }
                    tracing::info!(peer = %peer, from = t.from.as_str(), to = t.to.as_str(), diag = t.diag.as_str(), failure, "BFD session state");
                    self.report(peer, t.to, failure, t.diag);
                }
            }
        }
    }

    fn report(&self, peer: &str, state: BfdState, failure: bool, diag: Diagnostic) {
        self.metrics.set(
            m::BFD_UP,
            m::BFD_UP_HELP,
            &[("peer", peer)],
            if state == BfdState::Up { 1.0 } else { 0.0 },
        );
        let _ = self.reports.send(Report::State {
            peer: peer.to_string(),
            state,
            failure,
            diag,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next_state(rx: &mut mpsc::UnboundedReceiver<Report>, want: BfdState) -> Report {
        loop {
            match rx.recv().await {
                Some(r @ Report::State { state, .. }) if state == want => return r,
                Some(_) => continue,
                None => panic!("the BFD thread ended"),
            }
        }
    }

    /// The thread against a router played by a core session on 127.0.0.2: the session comes
    /// Up through the real sockets (TTL 255, demultiplexing, timers), the router's silence is
    /// reported as a failure within a detection time, and AdminDownAll completes.
    #[test]
    fn comes_up_with_a_peer_and_detects_its_silence() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let port = 39784;
            let (tx, mut rx) = mpsc::unbounded_channel();
            let h = spawn(port, tx, Metrics::default()).expect("thread");
            let cfg = bfd::Config {
                desired_min_tx: Duration::from_millis(50),
                required_min_rx: Duration::from_millis(50),
                detect_mult: 3,
                passive: false,
                hops: Hops::Single,
            };
            let router_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
            assert!(h.send(Command::Add {
                peer: "tor".into(),
                remote: router_ip,
                config: cfg,
            }));
            // The router: receives on 127.0.0.2:port, sends from 127.0.0.2 with TTL 255.
            let rsock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("s");
            rsock.set_reuse_address(true).expect("reuse");
            rsock
                .bind(&SocketAddr::new(router_ip, port).into())
                .expect("bind router");
            rsock.set_ttl_v4(255).expect("ttl");
            let rsock: UdpSocket = rsock.into();
            rsock
                .set_read_timeout(Some(Duration::from_millis(5)))
                .expect("timeout");
            let us = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
            let start = Instant::now();
            let mut router = Session::new(cfg, 0x5eed, start, 7);
            let mut buf = [0u8; 128];
            let mut up = false;
            let mut up_since: Option<Instant> = None;
            let deadline = start + Duration::from_secs(5);
            while Instant::now() < deadline {
                let now = Instant::now();
                let mut actions = Vec::new();
                if let Ok((n, _)) = rsock.recv_from(&mut buf) {
                    actions.extend(router.handle(
                        now,
                        Event::Received {
                            bytes: &buf[..n],
                            ttl: 255,
                        },
                    ));
                }
                if router.poll_timeout().is_some_and(|t| t <= now) {
                    actions.extend(router.handle(now, Event::Timeout));
                }
                for a in actions {
                    if let Action::Send(b) = a {
                        let _ = rsock.send_to(&b, us);
                    }
                }
                if let Ok(Report::State {
                    state: BfdState::Up,
                    ..
                }) = rx.try_recv()
                {
                    up = true;
                }
                // Once Up, keep answering a little longer, so the router's packets carry the
                // fast Up rate: until then the detection time is three of its 1 s idle
                // intervals (RFC 5880 §6.8.3).
                if up && router.state() == BfdState::Up {
                    if let Some(t) = up_since {
                        if now.duration_since(t) > Duration::from_millis(300) {
                            break;
                        }
                    } else {
                        up_since = Some(now);
                    }
                }
            }
            assert!(up, "the session came Up with the router");
            // Silence: the router stops. Down with a failure within the detection time (150 ms)
            // plus scheduling slack.
            let silent = Instant::now();
            let down =
                tokio::time::timeout(Duration::from_secs(2), next_state(&mut rx, BfdState::Down))
                    .await
                    .expect("Down in time");
            assert!(
                matches!(down, Report::State { failure: true, .. }),
                "{down:?}"
            );
            assert!(
                silent.elapsed() < Duration::from_millis(1000),
                "{:?}",
                silent.elapsed()
            );
            assert!(h.send(Command::AdminDownAll));
            let done = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match rx.recv().await {
                        Some(Report::AdminDownDone) => return true,
                        Some(_) => continue,
                        None => return false,
                    }
                }
            })
            .await
            .expect("AdminDownDone in time");
            assert!(done);
        });
    }
}
