//! The lab's backend: answers HTTP, TCP and UDP with one line that names the pod and node that
//! answered and the source address it saw, so tests can tell which endpoint served a request
//! and whether the client's address was preserved.
//!
//! One program for both uses: the `ferrolb.local/backend` image's entrypoint (compiled static
//! with `rustc` alone, so standard library only) and `ferrolb-lab backend`, for labs without
//! real nodes. Every read has a timeout and every connection a thread that ends with it.
//!
//! ```text
//! backend [--http PORT] [--tcp PORT] [--udp PORT] [--sink PORT] [--listen IP] [--name NAME] [--node NODE] [--text TEXT]
//! ```
//! Defaults: HTTP on 8080, TCP and UDP on 9000, no sink, all addresses (IPv4 and IPv6), name and
//! node from `POD_NAME` and `NODE_NAME`. The line is `pod=<name> node=<node> src=<ip>:<port>`,
//! or `--text` with ` src=...` appended. The sink (for throughput benchmarks) reads and
//! discards whatever a TCP client sends, then closes.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest HTTP request head read.
const MAX_REQUEST: usize = 8192;

/// What to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on (default `::`, which takes IPv4 too).
    pub listen: IpAddr,
    /// HTTP port.
    pub http: Option<u16>,
    /// Plain TCP port: the line is written on connect, then the connection closes.
    pub tcp: Option<u16>,
    /// UDP port: every datagram is answered with the line.
    pub udp: Option<u16>,
    /// TCP port that reads and discards everything (throughput benchmarks).
    pub sink: Option<u16>,
    /// The pod's name.
    pub name: String,
    /// The node's name.
    pub node: String,
    /// Replaces `pod=.. node=..` when set.
    pub text: Option<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            http: Some(8080),
            tcp: Some(9000),
            udp: Some(9000),
            sink: None,
            name: std::env::var("POD_NAME").unwrap_or_else(|_| "unknown".into()),
            node: std::env::var("NODE_NAME").unwrap_or_else(|_| "unknown".into()),
            text: None,
        }
    }
}

/// Parses the command line (without the program name).
pub fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut cfg = Config::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        let port = |v: String| -> Result<Option<u16>, String> {
            match v.parse::<u16>() {
                Ok(0) => Ok(None),
                Ok(p) => Ok(Some(p)),
                Err(_) => Err(format!("{flag}: {v:?} is not a port (0 turns it off)")),
            }
        };
        match flag.as_str() {
            "--http" => cfg.http = port(value()?)?,
            "--tcp" => cfg.tcp = port(value()?)?,
            "--udp" => cfg.udp = port(value()?)?,
            "--sink" => cfg.sink = port(value()?)?,
            "--listen" => {
                let v = value()?;
                cfg.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: {v:?} is not an IP address"))?;
            }
            "--name" => cfg.name = value()?,
            "--node" => cfg.node = value()?,
            "--text" => cfg.text = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(cfg)
}

/// The answer to a client at `peer`.
pub fn line(cfg: &Config, peer: SocketAddr) -> String {
    let src = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    match &cfg.text {
        Some(t) => format!("{t} src={src}\n"),
        None => format!("pod={} node={} src={src}\n", cfg.name, cfg.node),
    }
}

/// Binds every configured port, then serves until the process is killed. Fails only if a port
/// cannot be bound.
pub fn serve(cfg: Config) -> std::io::Result<()> {
    let http = cfg
        .http
        .map(|p| TcpListener::bind((cfg.listen, p)))
        .transpose()?;
    let tcp = cfg
        .tcp
        .map(|p| TcpListener::bind((cfg.listen, p)))
        .transpose()?;
    let udp = cfg
        .udp
        .map(|p| UdpSocket::bind((cfg.listen, p)))
        .transpose()?;
    let sink = cfg
        .sink
        .map(|p| TcpListener::bind((cfg.listen, p)))
        .transpose()?;
    let mut threads = Vec::new();
    if let Some(l) = http {
        let cfg = cfg.clone();
        threads.push(std::thread::spawn(move || accept(l, cfg, answer_http)));
    }
    if let Some(l) = tcp {
        let cfg = cfg.clone();
        threads.push(std::thread::spawn(move || accept(l, cfg, answer_tcp)));
    }
    if let Some(l) = sink {
        let cfg = cfg.clone();
        threads.push(std::thread::spawn(move || accept(l, cfg, drain)));
    }
    if let Some(sock) = udp {
        let cfg = cfg.clone();
        threads.push(std::thread::spawn(move || answer_udp(sock, cfg)));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn accept(listener: TcpListener, cfg: Config, answer: fn(TcpStream, SocketAddr, &Config)) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let cfg = cfg.clone();
        std::thread::spawn(move || answer(stream, peer, &cfg));
    }
}

fn answer_http(mut stream: TcpStream, peer: SocketAddr, cfg: &Config) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = line(cfg, peer);
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes());
}

fn answer_tcp(mut stream: TcpStream, peer: SocketAddr, cfg: &Config) {
    let _ = stream.write_all(line(cfg, peer).as_bytes());
}

/// Reads until the client closes (or goes quiet for the read timeout), discarding.
fn drain(mut stream: TcpStream, _peer: SocketAddr, _cfg: &Config) {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut buf = vec![0u8; 64 * 1024];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

fn answer_udp(sock: UdpSocket, cfg: Config) {
    let mut buf = [0u8; 2048];
    loop {
        if let Ok((_, peer)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(line(&cfg, peer).as_bytes(), peer);
        }
    }
}

/// The image's entrypoint.
pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse_args(&args)
        .map_err(|e| e.to_string())
        .and_then(|cfg| serve(cfg).map_err(|e| format!("cannot listen: {e}")));
    if let Err(e) = result {
        eprintln!("backend: {e}");
        std::process::exit(2);
    }
}
