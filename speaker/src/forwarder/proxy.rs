//! The speaker's userspace proxy, for node pools with `forwarding: Speaker` (ingress
//! `ipMode: Proxy`, which kube-proxy leaves alone): it listens on this node's published
//! addresses and forwards each TCP connection and UDP flow to the Service's ClusterIP (Cluster
//! policy) or to the Service's nodePort on this node (Local policy, so kube-proxy picks a local
//! endpoint). This serves clusters whose kube-proxy runs in IPVS mode, and ExternalIPs that a
//! 1:1 NAT delivers to the node's InternalIP. The client's address is not kept (the backend sees
//! the node's), as with any userspace proxy.
//!
//! [`listeners`] is pure (the plan in, the wanted listeners out); [`Proxies`] keeps the running
//! ones in line with it. Every connection and flow is bounded: connects time out, at most
//! [`MAX_CONNECTIONS`] TCP connections and [`MAX_FLOWS`] UDP flows at once, idle flows end.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinHandle;

use super::Proto;
use crate::plan::Proxied;

/// Longest wait for the backend to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TCP connections forwarded at once; more wait for a slot.
pub const MAX_CONNECTIONS: usize = 4096;
/// UDP flows (client address → upstream socket) at once; datagrams of new flows beyond it are
/// dropped.
pub const MAX_FLOWS: usize = 1024;
/// A UDP flow without traffic this long ends.
const FLOW_IDLE: Duration = Duration::from_secs(60);

/// One listener: where to listen and where to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    /// TCP or UDP.
    pub proto: Proto,
    /// This node's published address and the Service port.
    pub bind: SocketAddr,
    /// The ClusterIP and port, or this node's address and the nodePort.
    pub target: SocketAddr,
}

/// The listeners the plan asks for. A port without a target of its family (no ClusterIP of
/// that family, or no nodePort for a Local Service) is left out, and so is SCTP.
pub fn listeners(proxied: &[Proxied]) -> BTreeSet<Listener> {
    let mut out = BTreeSet::new();
    for svc in proxied {
        for addr in &svc.addrs {
            for (proto, port) in &svc.ports {
                let Some(proto) = Proto::parse(proto).filter(|p| *p != Proto::Sctp) else {
                    continue;
                };
                let target = if svc.etp_local {
                    svc.node_ports
                        .iter()
                        .find(|(p, sp, _)| Proto::parse(p) == Some(proto) && sp == port)
                        .map(|(_, _, np)| SocketAddr::new(*addr, *np))
                } else {
                    svc.cluster_ips
                        .iter()
                        .find(|c| c.is_ipv4() == addr.is_ipv4())
                        .map(|c| SocketAddr::new(*c, *port))
                };
                if let Some(target) = target {
                    out.insert(Listener {
                        proto,
                        bind: SocketAddr::new(*addr, *port),
                        target,
                    });
                }
            }
        }
    }
    out
}

/// The running listeners.
#[derive(Debug, Default)]
pub struct Proxies {
    running: BTreeMap<Listener, JoinHandle<()>>,
    /// Listeners that could not bind, with the error, so the report can say why.
    failed: BTreeMap<Listener, String>,
}

impl Proxies {
    /// Starts the listeners in `want` that do not run, stops the ones not in it.
    pub async fn reconcile(&mut self, want: &BTreeSet<Listener>) {
        let gone: Vec<Listener> = self
            .running
            .keys()
            .filter(|l| !want.contains(l))
            .copied()
            .collect();
        for l in gone {
            if let Some(h) = self.running.remove(&l) {
                h.abort();
                // Wait for the task to be dropped, so its socket is closed when this returns.
                let _ = h.await;
                tracing::info!(bind = %l.bind, proto = l.proto.as_str(), "stopped forwarding");
            }
        }
        self.failed.retain(|l, _| want.contains(l));
        for l in want {
            if self.running.contains_key(l) {
                continue;
            }
            match start(*l).await {
                Ok(h) => {
                    tracing::info!(bind = %l.bind, target = %l.target, proto = l.proto.as_str(), "forwarding");
                    self.running.insert(*l, h);
                    self.failed.remove(l);
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.failed.get(l) != Some(&text) {
                        tracing::warn!(bind = %l.bind, proto = l.proto.as_str(), error = %text, "cannot listen to forward");
                    }
                    self.failed.insert(*l, text);
                }
            }
        }
    }

    /// `(protocol, address, port)` of the running listeners.
    pub fn own_sockets(&self) -> BTreeSet<(Proto, IpAddr, u16)> {
        self.running
            .keys()
            .map(|l| (l.proto, l.bind.ip(), l.bind.port()))
            .collect()
    }

    /// Listeners that could not bind, with the error.
    pub fn failures(&self) -> &BTreeMap<Listener, String> {
        &self.failed
    }
}

async fn start(l: Listener) -> std::io::Result<JoinHandle<()>> {
    match l.proto {
        Proto::Tcp => {
            let listener = TcpListener::bind(l.bind).await?;
            Ok(tokio::spawn(serve_tcp(listener, l.target)))
        }
        _ => {
            let sock = UdpSocket::bind(l.bind).await?;
            Ok(tokio::spawn(serve_udp(Arc::new(sock), l.target)))
        }
    }
}

async fn serve_tcp(listener: TcpListener, target: SocketAddr) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(mut upstream)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
            else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, target: SocketAddr) {
    let flows: Arc<Mutex<BTreeMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let existing = flows.lock().await.get(&client).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                if flows.lock().await.len() >= MAX_FLOWS {
                    continue;
                }
                let local: SocketAddr = if target.is_ipv4() {
                    "0.0.0.0:0".parse().unwrap_or(target)
                } else {
                    "[::]:0".parse().unwrap_or(target)
                };
                let Ok(u) = UdpSocket::bind(local).await else {
                    continue;
                };
                if u.connect(target).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows.lock().await.insert(client, u.clone());
                tokio::spawn(replies(sock.clone(), u.clone(), client, flows.clone()));
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// Sends the backend's replies of one flow back to its client until the flow goes idle.
async fn replies(
    sock: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Arc<Mutex<BTreeMap<SocketAddr, Arc<UdpSocket>>>>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(Ok(n)) = tokio::time::timeout(FLOW_IDLE, upstream.recv(&mut buf)).await {
        let _ = sock.send_to(&buf[..n], client).await;
    }
    flows.lock().await.remove(&client);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxied(local: bool) -> Proxied {
        Proxied {
            key: "shop/web".into(),
            addrs: vec![
                "198.51.100.11".parse().expect("ip"),
                "2001:db8::11".parse().expect("ip"),
            ],
            ports: vec![("TCP".into(), 80), ("UDP".into(), 53), ("SCTP".into(), 9)],
            node_ports: vec![("TCP".into(), 80, 30080)],
            cluster_ips: vec!["203.0.113.7".parse().expect("ip")],
            etp_local: local,
        }
    }

    fn text(ls: &BTreeSet<Listener>) -> Vec<String> {
        ls.iter()
            .map(|l| format!("{} {} -> {}", l.proto.as_str(), l.bind, l.target))
            .collect()
    }

    #[test]
    fn cluster_services_go_to_the_cluster_ip_of_their_family() {
        assert_eq!(
            text(&listeners(&[proxied(false)])),
            [
                "TCP 198.51.100.11:80 -> 203.0.113.7:80",
                "UDP 198.51.100.11:53 -> 203.0.113.7:53",
            ],
            "no IPv6 ClusterIP: nothing for the IPv6 address; SCTP is not forwarded"
        );
    }

    #[test]
    fn local_services_go_to_the_node_port_on_this_node() {
        assert_eq!(
            text(&listeners(&[proxied(true)])),
            [
                "TCP 198.51.100.11:80 -> 198.51.100.11:30080",
                "TCP [2001:db8::11]:80 -> [2001:db8::11]:30080",
            ],
            "UDP 53 has no nodePort: not forwarded"
        );
    }

    #[tokio::test]
    async fn forwards_tcp_and_udp_on_loopback() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Backends: a TCP echo and a UDP echo on loopback ports of their own.
        let tcp_backend = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tcp_target = tcp_backend.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp_backend.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    if let Ok(n) = s.read(&mut b).await {
                        let _ = s.write_all(&b[..n]).await;
                    }
                });
            }
        });
        let udp_backend = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let udp_target = udp_backend.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = udp_backend.recv_from(&mut b).await {
                let _ = udp_backend.send_to(&b[..n], from).await;
            }
        });
        // The proxies, on free loopback ports.
        let free = |udp: bool| {
            if udp {
                std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
            } else {
                std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
            }
            .expect("free port")
        };
        let want = BTreeSet::from([
            Listener {
                proto: Proto::Tcp,
                bind: free(false),
                target: tcp_target,
            },
            Listener {
                proto: Proto::Udp,
                bind: free(true),
                target: udp_target,
            },
        ]);
        let mut p = Proxies::default();
        p.reconcile(&want).await;
        assert!(p.failures().is_empty(), "{:?}", p.failures());
        assert_eq!(p.own_sockets().len(), 2);
        let [tcp, udp] = [0, 1].map(|i| want.iter().nth(i).copied().expect("listener"));

        let mut c = TcpStream::connect(tcp.bind).await.expect("connect");
        c.write_all(b"ping").await.expect("write");
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.expect("read");
        assert_eq!(&b, b"ping");

        let u = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        u.send_to(b"pong", udp.bind).await.expect("send");
        let mut b = [0u8; 4];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), u.recv_from(&mut b))
            .await
            .expect("a reply in time")
            .expect("recv");
        assert_eq!(&b[..n], b"pong");

        // A listener the plan drops stops; a port already taken is a failure, not a panic.
        p.reconcile(&BTreeSet::from([udp])).await;
        assert_eq!(p.own_sockets().len(), 1);
        assert!(TcpStream::connect(tcp.bind).await.is_err(), "stopped");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let clash = Listener {
            proto: Proto::Tcp,
            bind: taken.local_addr().expect("addr"),
            target: tcp_target,
        };
        p.reconcile(&BTreeSet::from([udp, clash])).await;
        assert!(p.failures().contains_key(&clash));
    }
}
