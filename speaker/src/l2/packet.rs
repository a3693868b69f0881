//! Frames on the wire: per interface the speaker announces on, two packet sockets the kernel
//! filters ([`super::rawsock`]: ARP only, and ICMPv6 NS/NA only), a blocking receive thread per
//! socket that answers ARP and NDP with `speaker-core`'s responders, gratuitous ARP /
//! unsolicited NA on takeover, and solicited-node multicast membership for every announced IPv6
//! address. No other frame reaches user space, whatever the node's traffic.
//!
//! Owns the sockets and threads; decides nothing about ownership (the announcer,
//! [`super::announcer`], passes the set of IPs to answer for). Why the receive thread answers
//! itself instead of handing each request to tokio: a reply is a pure function of the frame and
//! the current answer set, and answering on the thread that received it keeps ARP latency at
//! kernel level even when both cores are busy.
//! What the async side needs to know (a dead channel, an address conflict) is bridged to tokio
//! through an mpsc channel. Every loop is bounded: the thread wakes at least every
//! [`READ_TIMEOUT`] to check its stop flag.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use ferrolb_runtime::Metrics;
use ferrolb_speaker_core::wire::{self, IgnoreReason, Mac, Outcome, arp, ndp};
use socket2::Socket;
use tokio::sync::mpsc;

use super::rawsock;
use crate::membership::Beat;
use crate::metrics as m;
use crate::netif::Iface;

/// How long a receive may block before the thread checks whether it should stop.
pub const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// Why a port could not be opened or a frame not sent.
#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    /// The interface has no Ethernet address.
    #[error("interface {0} has no MAC address")]
    NoMac(String),
    /// The packet socket could not be opened (needs CAP_NET_RAW).
    #[error("cannot open a packet socket on {iface} (CAP_NET_RAW needed): {source}")]
    Open {
        /// The interface.
        iface: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A frame could not be sent.
    #[error("send on {iface}: {source}")]
    Send {
        /// The interface.
        iface: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The receive thread could not be started.
    #[error("cannot start the receive thread for {iface}: {source}")]
    Thread {
        /// The interface.
        iface: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What a receive thread tells the async side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L2Event {
    /// The channel failed (interface gone); the port must be reopened.
    PortFailed {
        /// The interface.
        iface: String,
        /// The error text.
        error: String,
    },
    /// Another host claims an address we announce.
    Conflict {
        /// The interface.
        iface: String,
        /// The frame's Ethernet source.
        from: Mac,
    },
}

/// The addresses a port answers for.
#[derive(Debug, Default)]
struct Answering {
    v4: HashSet<Ipv4Addr>,
    v6: HashSet<Ipv6Addr>,
}

/// The socket frames are sent on (the ARP socket: a packet socket bound to the interface sends
/// any frame, whatever EtherType it receives).
type Sender = Arc<Socket>;

struct Port {
    index: u32,
    mac: Mac,
    sender: Sender,
    answering: Arc<RwLock<Answering>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Joins solicited-node groups (sends the MLD reports snooping switches need).
    mcast: Option<UdpSocket>,
    groups: BTreeMap<Ipv6Addr, usize>,
    ips: BTreeSet<IpAddr>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("index", &self.index)
            .field("ips", &self.ips)
            .finish_non_exhaustive()
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // A frame already being handled must not be answered from the old set.
        *self.answering.write().unwrap_or_else(|p| p.into_inner()) = Answering::default();
        // The threads exit within READ_TIMEOUT; joining here would block the async caller, so
        // they are detached and only their stop flag is set.
        self.threads.clear();
    }
}

/// All open ports.
pub struct Ports {
    ports: BTreeMap<String, Port>,
    metrics: Metrics,
    events: mpsc::UnboundedSender<L2Event>,
    beat: Beat,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports")
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

/// Where in a frame the L3 header starts and which EtherType it has, skipping one 802.1Q tag.
fn l3(frame: &[u8]) -> Option<(u16, usize)> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if et == 0x8100 {
        Some((u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]), 18))
    } else {
        Some((et, 14))
    }
}

/// Only ARP and ICMPv6 NS/NA concern us; everything else on the wire is skipped before parsing
/// so ordinary traffic is neither parsed nor counted as a drop.
fn interesting(frame: &[u8]) -> Option<bool> {
    let (et, at) = l3(frame)?;
    match et {
        0x0806 => Some(true),
        0x86dd => {
            let next = *frame.get(at + 6)?;
            let icmp_type = *frame.get(at + 40)?;
            Some(next == 58 && (icmp_type == 135 || icmp_type == 136))
        }
        _ => Some(false),
    }
}

struct Receiver {
    iface: String,
    mac: Mac,
    sender: Sender,
    answering: Arc<RwLock<Answering>>,
    stop: Arc<AtomicBool>,
    metrics: Metrics,
    events: mpsc::UnboundedSender<L2Event>,
    beat: Beat,
}

impl Receiver {
    fn run(self, sock: Arc<Socket>) {
        let mut buf = vec![0u8; 2048];
        while !self.stop.load(Ordering::Acquire) {
            match (&*sock).read(&mut buf) {
                Ok(n) => self.handle(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                // The interface went down (or was down when the socket was bound): the kernel
                // says so once, and delivers again by itself when it comes back up.
                Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                    std::thread::sleep(READ_TIMEOUT);
                }
                Err(e) => {
                    if !self.stop.load(Ordering::Acquire) {
                        let _ = self.events.send(L2Event::PortFailed {
                            iface: self.iface.clone(),
                            error: e.to_string(),
                        });
                    }
                    return;
                }
            }
        }
    }

    fn handle(&self, frame: &[u8]) {
        if interesting(frame) != Some(true) {
            return;
        }
        // Membership did not run recently, or stalled and the engine has not given the IPs up
        // yet: peers may have taken them over (the label predates the membership thread).
        if !self.beat.fresh() {
            self.metrics.inc(
                m::FRAMES_IGNORED,
                m::FRAMES_IGNORED_HELP,
                &[("reason", "engine_stalled")],
                1.0,
            );
            return;
        }
        let is_arp = l3(frame).is_some_and(|(et, _)| et == 0x0806);
        let outcome = {
            let ans = self.answering.read().unwrap_or_else(|p| p.into_inner());
            if is_arp {
                arp::respond(frame, self.mac, |ip| ans.v4.contains(&ip))
            } else {
                // The NA's source is the announced address itself, as Linux answers for its own
                // addresses: tools like ndisc6 ignore answers from a source of another scope
                // (a link-local one) than the global address they asked about.
                let target = match wire::parse(frame) {
                    Ok(wire::Packet {
                        frame: wire::Frame::NeighborSolicit(ns),
                        ..
                    }) => ns.target,
                    _ => Ipv6Addr::UNSPECIFIED,
                };
                ndp::respond(frame, self.mac, target, |ip| ans.v6.contains(&ip))
            }
        };
        let family = if is_arp { "arp" } else { "ndp" };
        match outcome {
            Outcome::Reply(bytes) => {
                let sent = self.sender.send(&bytes);
                match sent {
                    Ok(_) => self.metrics.inc(
                        m::REQUESTS_ANSWERED,
                        m::REQUESTS_ANSWERED_HELP,
                        &[("family", family)],
                        1.0,
                    ),
                    other => {
                        self.metrics.inc(
                            m::SEND_ERRORS,
                            m::SEND_ERRORS_HELP,
                            &[("kind", "reply")],
                            1.0,
                        );
                        tracing::debug!(iface = %self.iface, error = ?other.err(), "reply not sent");
                    }
                }
            }
            Outcome::Ignore(reason) => {
                self.metrics.inc(
                    m::FRAMES_IGNORED,
                    m::FRAMES_IGNORED_HELP,
                    &[("reason", reason.as_str())],
                    1.0,
                );
                if reason == IgnoreReason::AddressConflict {
                    let from = wire::parse(frame)
                        .map(|p| p.ethernet.src)
                        .unwrap_or_default();
                    let _ = self.events.send(L2Event::Conflict {
                        iface: self.iface.clone(),
                        from,
                    });
                }
            }
            Outcome::Drop(reason) => self.metrics.inc(
                m::FRAMES_DROPPED,
                m::FRAMES_DROPPED_HELP,
                &[("reason", reason.as_str())],
                1.0,
            ),
        }
    }
}

fn solicited_node_socket() -> Option<UdpSocket> {
    match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open an IPv6 socket to join solicited-node groups; IPv6 NDP relies on promiscuous-free delivery");
            None
        }
    }
}

impl Ports {
    /// No ports yet; receive threads report on `events`.
    pub fn new(metrics: Metrics, events: mpsc::UnboundedSender<L2Event>, beat: Beat) -> Ports {
        Ports {
            beat,
            ports: BTreeMap::new(),
            metrics,
            events,
        }
    }

    fn open(&self, iface: &Iface) -> Result<Port, L2Error> {
        let mac = iface
            .mac
            .ok_or_else(|| L2Error::NoMac(iface.name.clone()))?;
        let opened = |ethertype, filter: Option<&[socket2::SockFilter]>| {
            let sock = rawsock::open(iface.index, ethertype, filter)?;
            sock.set_read_timeout(Some(READ_TIMEOUT))?;
            sock.set_write_timeout(Some(Duration::from_millis(100)))?;
            Ok::<_, std::io::Error>(Arc::new(sock))
        };
        let open_err = |source| L2Error::Open {
            iface: iface.name.clone(),
            source,
        };
        // Our frames are addressed to our MAC, broadcast, or a solicited-node group we join:
        // no promiscuous mode.
        let arp_sock = opened(rawsock::ETH_P_ARP, None).map_err(open_err)?;
        let ndp_sock =
            opened(rawsock::ETH_P_IPV6, Some(&rawsock::ndp_filter())).map_err(open_err)?;
        let sender: Sender = arp_sock.clone();
        let answering = Arc::new(RwLock::new(Answering::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (sock, what) in [(arp_sock, "arp"), (ndp_sock, "ndp")] {
            let receiver = Receiver {
                iface: iface.name.clone(),
                mac,
                sender: sender.clone(),
                answering: answering.clone(),
                stop: stop.clone(),
                metrics: self.metrics.clone(),
                events: self.events.clone(),
                beat: self.beat.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("{what}-{}", iface.name))
                .spawn(move || receiver.run(sock))
                .map_err(|source| L2Error::Thread {
                    iface: iface.name.clone(),
                    source,
                });
            match thread {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
        tracing::info!(iface = %iface.name, index = iface.index, "listening for ARP and NDP");
        Ok(Port {
            index: iface.index,
            mac,
            sender,
            answering,
            stop,
            threads,
            mcast: solicited_node_socket(),
            groups: BTreeMap::new(),
            ips: BTreeSet::new(),
        })
    }

    /// Makes the open ports and their answer sets match `want` (interface → IPs): opens missing
    /// ports, closes unneeded ones (and ones whose interface changed index or MAC), and updates
    /// answer sets and multicast groups. Returns the interfaces that could not be opened.
    pub fn apply(
        &mut self,
        want: &BTreeMap<String, (Iface, BTreeSet<IpAddr>)>,
    ) -> Vec<(String, L2Error)> {
        let mut errors = Vec::new();
        self.ports.retain(|name, port| {
            want.get(name)
                .is_some_and(|(i, _)| i.index == port.index && i.mac == Some(port.mac))
        });
        for (name, (iface, ips)) in want {
            if !self.ports.contains_key(name) {
                match self.open(iface) {
                    Ok(p) => {
                        self.ports.insert(name.clone(), p);
                    }
                    Err(e) => {
                        errors.push((name.clone(), e));
                        continue;
                    }
                }
            }
            let Some(port) = self.ports.get_mut(name) else {
                continue;
            };
            if &port.ips != ips {
                set_answering(port, ips);
            }
        }
        errors
    }

    /// Closes the port of `iface` (its thread failed); the next [`Self::apply`] reopens it.
    pub fn close(&mut self, iface: &str) {
        self.ports.remove(iface);
    }

    /// Sends the `index`-th takeover announcement for `ip` on `iface`: ARP alternates the
    /// reply form (target MAC = sender MAC, which Linux needs to update an existing entry) and
    /// the request form; IPv6 sends an unsolicited NA to all-nodes with Override set.
    pub fn announce(&self, iface: &str, ip: IpAddr, index: u32) -> Result<(), L2Error> {
        let Some(port) = self.ports.get(iface) else {
            return Ok(());
        };
        let (bytes, family) = match ip {
            IpAddr::V4(v4) => {
                let p = if index.is_multiple_of(2) {
                    arp::gratuitous_reply(port.mac, v4, None)
                } else {
                    arp::gratuitous_request(port.mac, v4, None)
                };
                (p.emit(), "arp")
            }
            IpAddr::V6(v6) => (
                ndp::unsolicited_advert(port.mac, v6, v6, None).emit(),
                "ndp",
            ),
        };
        let sent = port.sender.send(&bytes);
        match sent {
            Ok(_) => {
                self.metrics.inc(
                    m::GRATUITOUS_SENT,
                    m::GRATUITOUS_SENT_HELP,
                    &[("family", family)],
                    1.0,
                );
                Ok(())
            }
            Err(source) => {
                self.metrics.inc(
                    m::SEND_ERRORS,
                    m::SEND_ERRORS_HELP,
                    &[("kind", "gratuitous")],
                    1.0,
                );
                Err(L2Error::Send {
                    iface: iface.to_string(),
                    source,
                })
            }
        }
    }

    /// Interfaces with an open port.
    pub fn open_ports(&self) -> impl Iterator<Item = &str> {
        self.ports.keys().map(String::as_str)
    }
}

fn set_answering(port: &mut Port, ips: &BTreeSet<IpAddr>) {
    let mut ans = Answering::default();
    for ip in ips {
        match ip {
            IpAddr::V4(a) => {
                ans.v4.insert(*a);
            }
            IpAddr::V6(a) => {
                ans.v6.insert(*a);
            }
        }
    }
    // Join new solicited-node groups before answering, leave old ones after.
    let want: BTreeMap<Ipv6Addr, usize> = ans.v6.iter().fold(BTreeMap::new(), |mut acc, a| {
        *acc.entry(ndp::solicited_node(*a)).or_default() += 1;
        acc
    });
    if let Some(sock) = &port.mcast {
        for g in want.keys().filter(|g| !port.groups.contains_key(*g)) {
            if let Err(e) = sock.join_multicast_v6(g, port.index) {
                tracing::warn!(group = %g, error = %e, "cannot join solicited-node group");
            }
        }
    }
    *port.answering.write().unwrap_or_else(|p| p.into_inner()) = ans;
    if let Some(sock) = &port.mcast {
        for g in port.groups.keys().filter(|g| !want.contains_key(*g)) {
            let _ = sock.leave_multicast_v6(g, port.index);
        }
    }
    port.groups = want;
    port.ips = ips.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_arp_and_ndp_are_interesting() {
        let mut f = vec![0u8; 80];
        f[12] = 0x08;
        f[13] = 0x06;
        assert_eq!(interesting(&f), Some(true));
        f[13] = 0x00; // IPv4
        assert_eq!(interesting(&f), Some(false));
        f[12] = 0x86;
        f[13] = 0xdd;
        f[14 + 6] = 58;
        f[14 + 40] = 135;
        assert_eq!(interesting(&f), Some(true));
        f[14 + 40] = 128; // echo request
        assert_eq!(interesting(&f), Some(false));
        // VLAN-tagged ARP.
        let mut v = vec![0u8; 64];
        v[12] = 0x81;
        v[16] = 0x08;
        v[17] = 0x06;
        assert_eq!(interesting(&v), Some(true));
        assert_eq!(interesting(&[0u8; 5]), None);
        assert_eq!(interesting(&f[..30]), None);
    }
}
