//! `lab_probe`: the small network programs the speaker's lab tests and the failover benchmark run
//! inside lab namespaces. Every mode stops by itself (`--seconds`), so nothing outlives a run.
//!
//! - `http`: a tiny HTTP/1.0 backend answering `hello from <name>` (the Service's endpoint).
//! - `udp-echo`: echoes datagrams back with `<name>` appended (the benchmark's responder).
//! - `udp-probe`: sends a datagram every `--interval-us` and prints one line per reply:
//!   `<unix µs received> <seq> <responder name>`; the benchmark reads it. The responder is the
//!   `node=` field of a reply that has one (the lab's backend image: `pod=.. node=.. src=..`),
//!   else its second word (`udp-echo`: `<seq> <name>`).
//! - `tcp-probe`: connects every `--interval-ms` (with `--timeout-ms`) and prints
//!   `attempts=<n> ok=<n> failed=<n> slow=<n>` plus one `fail <unix ms> <error>` line per
//!   failure and one `slow <unix ms> <duration>` line per connect that needed a SYN
//!   retransmission (took 900 ms or more). `reset` counts connects whose handshake completed
//!   but whose connection was reset before the probe looked (ECONNRESET, not ECONNREFUSED).
//! - `http-probe`: every `--interval-ms` a new TCP connection and an HTTP/1.0 `GET /`, each line
//!   printed as it happens: `ok <unix ms> <ms taken> <first word of the body> <mac> <mac>` for
//!   a `200` answer, `fail <unix ms> <mac> <mac> <what went wrong>` otherwise, so a harness can
//!   stop it at any time and still read every attempt. The two MACs are the client's neighbour
//!   entry for the target (`/proc/net/arp`, `-` if none) before and after the attempt: when they
//!   differ, the IP moved to another node while the connection was open.
//! - `garp-agent`: opens a packet socket on `--iface` and, for every `go` line on stdin, at once
//!   sends a gratuitous ARP (reply form, then request form) for `--ip`: the benchmark's oracle.
//!   Prints `ready` once the socket is open, and nothing after (nobody reads on).

use std::io::{BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "lab_probe", about = "Network helpers for ferrolb's lab tests")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// HTTP/1.0 backend.
    Http {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 900)]
        seconds: u64,
    },
    /// UDP echo with the responder's name appended.
    UdpEcho {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 900)]
        seconds: u64,
    },
    /// A datagram every interval; one output line per reply.
    UdpProbe {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        interval_us: u64,
        #[arg(long)]
        seconds: u64,
    },
    /// A TCP connect every interval; a summary at the end.
    TcpProbe {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        #[arg(long)]
        seconds: u64,
    },
    /// A TCP connection and an HTTP GET every interval; one output line per attempt.
    HttpProbe {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        #[arg(long)]
        seconds: u64,
    },
    /// Sends a gratuitous ARP for `ip` on every `go` line from stdin.
    GarpAgent {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        ip: Ipv4Addr,
        #[arg(long, default_value_t = 900)]
        seconds: u64,
    },
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn http(bind: SocketAddr, name: &str, seconds: u64) -> std::io::Result<()> {
    let listener = TcpListener::bind(bind)?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((mut s, _)) => {
                // One thread per connection: a client that never sends its request (or whose
                // FIN/RST went to another node after an announcer change) must not hold up the
                // accept loop, or the listen backlog fills and new connects fail.
                let name = name.to_string();
                std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf);
                    let body = format!("hello from {name}\n");
                    let _ = write!(
                        s,
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn udp_echo(bind: SocketAddr, name: &str, seconds: u64) -> std::io::Result<()> {
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut out = buf.get(..n.min(64)).unwrap_or_default().to_vec();
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            let _ = sock.send_to(&out, from);
        }
    }
    Ok(())
}

fn udp_probe(target: SocketAddr, interval_us: u64, seconds: u64) -> std::io::Result<()> {
    let sock = UdpSocket::bind(("0.0.0.0", 0))?;
    sock.set_nonblocking(true)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let interval = Duration::from_micros(interval_us.max(100));
    let mut next = start;
    let mut seq: u64 = 0;
    let mut buf = [0u8; 1500];
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    while Instant::now() < deadline {
        let now = Instant::now();
        if now >= next {
            seq += 1;
            // Errors (no route, unresolved neighbour) are expected during fail-over.
            let _ = sock.send_to(seq.to_string().as_bytes(), target);
            next += interval;
            if next < now {
                next = now + interval;
            }
        }
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).to_string();
            let mut parts = text.split_whitespace();
            let s = parts.next().unwrap_or("?");
            let who = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("node="))
                .or_else(|| parts.next())
                .unwrap_or("?");
            let _ = writeln!(out, "{} {s} {who}", unix_us());
        }
        let _ = out.flush();
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

fn tcp_probe(target: SocketAddr, interval_ms: u64, timeout_ms: u64, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut attempts, mut ok, mut failed, mut slow, mut reset) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    while Instant::now() < deadline {
        let began = Instant::now();
        attempts += 1;
        match TcpStream::connect_timeout(&target, Duration::from_millis(timeout_ms)) {
            Ok(_) => {
                ok += 1;
                // Longer than the initial SYN retransmission timeout (1 s): a SYN or SYN-ACK
                // was lost and the connect only succeeded on a retransmission.
                if began.elapsed() >= Duration::from_millis(900) {
                    slow += 1;
                    failures.push(format!("slow {} {:?}", unix_us() / 1000, began.elapsed()));
                }
            }
            // ECONNRESET (not ECONNREFUSED) means the handshake completed and the connection
            // was reset before this thread looked: the TCP connect succeeded.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                reset += 1;
                failures.push(format!("reset {} {e}", unix_us() / 1000));
            }
            Err(e) => {
                failed += 1;
                failures.push(format!("fail {} {e}", unix_us() / 1000));
            }
        }
        let spent = began.elapsed();
        if let Some(rest) = Duration::from_millis(interval_ms).checked_sub(spent) {
            std::thread::sleep(rest);
        }
    }
    println!("attempts={attempts} ok={ok} failed={failed} slow={slow} reset={reset}");
    for f in failures.iter().take(100) {
        println!("{f}");
    }
}

/// One connection and `GET /`: the first word of a `200` answer's body, or what went wrong.
fn http_get(target: SocketAddr, timeout: Duration) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket: {e}"))?;
    write!(s, "GET / HTTP/1.0\r\nHost: {target}\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::new();
    // The backends close after answering (HTTP/1.0); `take` bounds a misbehaving one.
    s.take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(|e| format!("receive: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete answer ({} bytes)", answer.len()))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("answer {status:?}"));
    }
    Ok(body.split_whitespace().next().unwrap_or("-").to_string())
}

/// The hardware address in this namespace's IPv4 neighbour table for `ip`, or `-`.
fn neighbour_mac(ip: std::net::IpAddr) -> String {
    let table = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    let ip = ip.to_string();
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&ip.as_str()))
        .and_then(|f| f.get(3).map(|m| (*m).to_string()))
        .filter(|m| m != "00:00:00:00:00:00")
        .unwrap_or_else(|| "-".into())
}

fn http_probe(target: SocketAddr, interval_ms: u64, timeout_ms: u64, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let timeout = Duration::from_millis(timeout_ms.max(1));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while Instant::now() < deadline {
        let began = Instant::now();
        let before = neighbour_mac(target.ip());
        let result = http_get(target, timeout);
        let after = neighbour_mac(target.ip());
        let line = match result {
            Ok(first) => format!(
                "ok {} {} {first} {before} {after}",
                unix_us() / 1000,
                began.elapsed().as_millis()
            ),
            Err(e) => format!("fail {} {before} {after} {e}", unix_us() / 1000),
        };
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        if let Some(rest) = Duration::from_millis(interval_ms).checked_sub(began.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

fn garp_agent(iface: &str, ip: Ipv4Addr, seconds: u64) -> Result<(), String> {
    use ferrolb_speaker_core::wire::arp;
    let ni = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == iface)
        .ok_or_else(|| format!("no interface {iface}"))?;
    let mac = ni.mac.ok_or_else(|| format!("{iface} has no MAC"))?;
    let mac = [mac.0, mac.1, mac.2, mac.3, mac.4, mac.5];
    let cfg = pnet_datalink::Config {
        promiscuous: false,
        ..Default::default()
    };
    let mut tx = match pnet_datalink::channel(&ni, cfg) {
        Ok(pnet_datalink::Channel::Ethernet(tx, _rx)) => tx,
        Ok(_) => return Err("not an Ethernet channel".into()),
        Err(e) => return Err(e.to_string()),
    };
    let frames = [
        arp::gratuitous_reply(mac, ip, None).emit(),
        arp::gratuitous_request(mac, ip, None).emit(),
    ];
    println!("ready");
    let _ = std::io::stdout().flush();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    for line in std::io::stdin().lock().lines() {
        if Instant::now() > deadline {
            break;
        }
        let Ok(line) = line else { break };
        if line.trim() == "go" {
            for f in &frames {
                // A socket whose interface went down and up reports ENETDOWN once, on the
                // next send; that frame is then sent again.
                let first = tx.send_to(f, None);
                if let Some(Err(_)) = first
                    && let Some(Err(e)) = tx.send_to(f, None)
                {
                    eprintln!("send: {e}");
                }
            }
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.mode {
        Mode::Http {
            bind,
            name,
            seconds,
        } => http(bind, &name, seconds).map_err(|e| e.to_string()),
        Mode::UdpEcho {
            bind,
            name,
            seconds,
        } => udp_echo(bind, &name, seconds).map_err(|e| e.to_string()),
        Mode::UdpProbe {
            target,
            interval_us,
            seconds,
        } => udp_probe(target, interval_us, seconds).map_err(|e| e.to_string()),
        Mode::TcpProbe {
            target,
            interval_ms,
            timeout_ms,
            seconds,
        } => {
            tcp_probe(target, interval_ms, timeout_ms, seconds);
            Ok(())
        }
        Mode::HttpProbe {
            target,
            interval_ms,
            timeout_ms,
            seconds,
        } => {
            http_probe(target, interval_ms, timeout_ms, seconds);
            Ok(())
        }
        Mode::GarpAgent { iface, ip, seconds } => garp_agent(&iface, ip, seconds),
    };
    if let Err(e) = result {
        eprintln!("lab_probe: {e}");
        std::process::exit(1);
    }
}
