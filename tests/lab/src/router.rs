//! The lab's router: a namespace `<id>-router` between the LAN bridge and a client network
//! behind it (`<id>-rclient`), running BIRD 2 as a top-of-rack router that learns Service IPs
//! from the speakers over BGP and installs them as ECMP routes in its kernel.
//!
//! ```text
//!  <id>-rclient 192.0.2.130 ── 192.0.2.129 [eth1] <id>-router [eth0] 198.51.100.1 ── br0 (LAN)
//!               2001:db8:2::2    2001:db8:2::1                       2001:db8::1
//! ```
//!
//! Owns the router's addressing and the commands that build it ([`Router::setup_commands`],
//! pure), the BIRD configuration ([`BirdConfig::render`], pure) and running BIRD in the
//! namespace with its files in the lab's run directory (never the system service). The
//! router's namespace hashes flows on their ports (`fib_multipath_hash_policy=1`), so flows
//! from one client spread over the next hops. The client behind it reaches Services only
//! through the router. It never touches the host's namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::plan::{BRIDGE, HOST_IFACE, LabHost};
use crate::process::{self, LabProcess, ProcessError};

/// The router's LAN address (IPv4).
pub const LAN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The router's LAN address (IPv6).
pub const LAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
/// The router's address on the client network (IPv4, in 192.0.2.128/26).
pub const CLIENT_GW_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 129);
/// The client's address behind the router (IPv4).
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 130);
/// The client network (IPv4).
pub const CLIENT_NET_V4: &str = "192.0.2.128/26";
/// The router's address on the client network (IPv6, in 2001:db8:2::/64).
pub const CLIENT_GW_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
/// The client's address behind the router (IPv6).
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
/// The client network (IPv6).
pub const CLIENT_NET_V6: &str = "2001:db8:2::/64";
/// The router's bridge port in the LAN namespace.
pub const LAN_PORT: &str = "v-router";
/// The router's interface towards the client.
pub const CLIENT_IFACE: &str = "eth1";

/// Why the router or BIRD could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A command could not be run.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// The command.
        cmd: String,
        /// Why.
        source: std::io::Error,
    },
    /// BIRD could not be started.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A file could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// BIRD did not open its control socket in time.
    #[error("BIRD did not start within {0:?}; log:\n{1}")]
    NotReady(Duration, String),
}

/// The router of lab `id`, with its files under the lab's run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// `<id>-router`.
    pub netns: String,
    /// `<id>-rclient`: the client behind the router.
    pub client_netns: String,
    /// Where BIRD's configuration, socket, pid file and log live.
    pub dir: PathBuf,
}

/// The namespaces a router adds to lab `id` (router first).
pub fn namespaces(id: &str) -> [String; 2] {
    [format!("{id}-router"), format!("{id}-rclient")]
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_string()).collect()
}

impl Router {
    /// The router of lab `id` whose run directory is `run`.
    pub fn new(id: &str, run: &Path) -> Router {
        let [netns, client_netns] = namespaces(id);
        Router {
            netns,
            client_netns,
            dir: run.join("router"),
        }
    }

    /// The commands that build the router, the client behind it and the nodes' routes back to
    /// that client, in order. Run after the LAN exists.
    pub fn setup_commands(&self, lan_netns: &str, nodes: &[LabHost]) -> Vec<Vec<String>> {
        let (r, c) = (self.netns.as_str(), self.client_netns.as_str());
        let lan4 = format!("{LAN_V4}/24");
        let lan6 = format!("{LAN_V6}/64");
        let gw4 = format!("{CLIENT_GW_V4}/26");
        let gw6 = format!("{CLIENT_GW_V6}/64");
        let cl4 = format!("{CLIENT_V4}/26");
        let cl6 = format!("{CLIENT_V6}/64");
        let mut cmds = vec![
            argv(&["ip", "netns", "add", r]),
            argv(&["ip", "netns", "add", c]),
            argv(&["ip", "-n", r, "link", "set", "lo", "up"]),
            argv(&["ip", "-n", c, "link", "set", "lo", "up"]),
            argv(&[
                "ip", "link", "add", HOST_IFACE, "netns", r, "type", "veth", "peer", "name",
                LAN_PORT, "netns", lan_netns,
            ]),
            argv(&[
                "ip",
                "link",
                "add",
                CLIENT_IFACE,
                "netns",
                r,
                "type",
                "veth",
                "peer",
                "name",
                HOST_IFACE,
                "netns",
                c,
            ]),
            // Forwarding, and the L4 hash that spreads one client's flows over next hops.
            argv(&[
                "ip",
                "netns",
                "exec",
                r,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.fib_multipath_hash_policy=1",
                "net.ipv6.fib_multipath_hash_policy=1",
                "net.ipv6.conf.default.accept_dad=0",
            ]),
            argv(&[
                "ip",
                "netns",
                "exec",
                c,
                "sysctl",
                "-q",
                "-w",
                "net.ipv6.conf.default.accept_dad=0",
            ]),
            argv(&["ip", "-n", r, "addr", "add", &lan4, "dev", HOST_IFACE]),
            argv(&[
                "ip", "-n", r, "addr", "add", &lan6, "dev", HOST_IFACE, "nodad",
            ]),
            argv(&["ip", "-n", r, "addr", "add", &gw4, "dev", CLIENT_IFACE]),
            argv(&[
                "ip",
                "-n",
                r,
                "addr",
                "add",
                &gw6,
                "dev",
                CLIENT_IFACE,
                "nodad",
            ]),
            argv(&["ip", "-n", c, "addr", "add", &cl4, "dev", HOST_IFACE]),
            argv(&[
                "ip", "-n", c, "addr", "add", &cl6, "dev", HOST_IFACE, "nodad",
            ]),
            argv(&["ip", "-n", r, "link", "set", HOST_IFACE, "up"]),
            argv(&["ip", "-n", r, "link", "set", CLIENT_IFACE, "up"]),
            argv(&["ip", "-n", c, "link", "set", HOST_IFACE, "up"]),
            argv(&[
                "ip", "-n", lan_netns, "link", "set", LAN_PORT, "master", BRIDGE, "up",
            ]),
            argv(&[
                "ip",
                "-n",
                c,
                "route",
                "add",
                "default",
                "via",
                &CLIENT_GW_V4.to_string(),
            ]),
            argv(&[
                "ip",
                "-n",
                c,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &CLIENT_GW_V6.to_string(),
            ]),
        ];
        for n in nodes {
            let ns = n.netns.as_str();
            cmds.push(argv(&[
                "ip",
                "-n",
                ns,
                "route",
                "add",
                CLIENT_NET_V4,
                "via",
                &LAN_V4.to_string(),
            ]));
            cmds.push(argv(&[
                "ip",
                "-n",
                ns,
                "-6",
                "route",
                "add",
                CLIENT_NET_V6,
                "via",
                &LAN_V6.to_string(),
            ]));
        }
        cmds
    }

    /// BIRD's files.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("bird.conf")
    }

    /// BIRD's control socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    /// BIRD's log (its own `log` statement; stdout and stderr go to `bird.out`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("bird.log")
    }

    /// Runs `cmd` in the router's namespace; a non-zero exit is not an error.
    pub fn exec(&self, cmd: &[&str]) -> Result<Output, RouterError> {
        run_in(&self.netns, cmd)
    }

    /// Runs `cmd` in the client's namespace behind the router.
    pub fn exec_client(&self, cmd: &[&str]) -> Result<Output, RouterError> {
        run_in(&self.client_netns, cmd)
    }

    /// `birdc -s <socket> <args>`, its stdout (lossy) whatever the exit status.
    pub fn birdc(&self, args: &[&str]) -> Result<String, RouterError> {
        let sock = self.socket_path().display().to_string();
        let mut cmd = vec!["birdc", "-s", sock.as_str()];
        cmd.extend_from_slice(args);
        let out = self.exec(&cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `conf` and starts BIRD in the router's namespace (foreground, so the returned
    /// process is BIRD itself; dropping it kills BIRD). Returns once the control socket
    /// answers.
    pub fn start_bird(&self, conf: &BirdConfig) -> Result<LabProcess, RouterError> {
        self.write_config(conf)?;
        let _ = std::fs::remove_file(self.socket_path());
        let out = self.dir.join("bird.out");
        let cmd = argv(&[
            "bird",
            "-f",
            "-c",
            &self.config_path().display().to_string(),
            "-s",
            &self.socket_path().display().to_string(),
            "-P",
            &self.dir.join("bird.pid").display().to_string(),
        ]);
        let child = process::spawn_detached(Some(&self.netns), &cmd, &out, &[])?;
        let p = LabProcess::new("bird", child, out.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .birdc(&["show", "status"])
                .is_ok_and(|s| s.contains("Daemon is up"))
            {
                return Ok(p);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(&out).unwrap_or_default();
        Err(RouterError::NotReady(Duration::from_secs(10), log))
    }

    /// Writes `conf` and has the running BIRD load it (`birdc configure`); its output.
    pub fn reconfigure(&self, conf: &BirdConfig) -> Result<String, RouterError> {
        self.write_config(conf)?;
        self.birdc(&["configure"])
    }

    fn write_config(&self, conf: &BirdConfig) -> Result<(), RouterError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| RouterError::Write {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.config_path();
        std::fs::write(&path, conf.render(&self.log_path()))
            .map_err(|source| RouterError::Write { path, source })
    }

    /// The next hops of the kernel route to `dst` in the router's namespace (`ip route show
    /// exact`), sorted; empty when there is no route.
    pub fn next_hops(&self, dst: IpAddr) -> Result<Vec<IpAddr>, RouterError> {
        let (fam, len) = if dst.is_ipv4() {
            ("-4", 32)
        } else {
            ("-6", 128)
        };
        let prefix = format!("{dst}/{len}");
        let out = self.exec(&["ip", fam, "route", "show", "exact", &prefix])?;
        Ok(parse_next_hops(&String::from_utf8_lossy(&out.stdout)))
    }
}

fn run_in(netns: &str, cmd: &[&str]) -> Result<Output, RouterError> {
    let argv = process::in_netns(Some(netns), &argv(cmd));
    let (program, args) = argv.split_first().ok_or(ProcessError::EmptyCommand)?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RouterError::Spawn {
            cmd: argv.join(" "),
            source,
        })
}

/// The gateways in `ip route show` output: `via X` of a single route or of each `nexthop`,
/// sorted and deduplicated.
pub fn parse_next_hops(text: &str) -> Vec<IpAddr> {
    let mut hops: Vec<IpAddr> = Vec::new();
    let words: Vec<&str> = text.split_whitespace().collect();
    for w in words.windows(2) {
        if w[0] == "via" {
            // `via inet6 fe80::1` (a v4 route with a v6 gateway) has the family first.
            if let Ok(ip) = w[1].parse::<IpAddr>() {
                hops.push(ip);
            }
        } else if (w[0] == "inet6" || w[0] == "inet")
            && let Ok(ip) = w[1].parse::<IpAddr>()
            && !hops.contains(&ip)
        {
            hops.push(ip);
        }
    }
    hops.sort();
    hops.dedup();
    hops
}

/// One BGP neighbour of the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdPeer {
    /// Protocol name (letters, digits, `_`).
    pub name: String,
    /// The speaker's address.
    pub address: IpAddr,
    /// Its AS.
    pub asn: u32,
    /// TCP MD5 password.
    pub password: Option<String>,
    /// BFD with this neighbour.
    pub bfd: bool,
}

/// BIRD's configuration: a ToR that accepts the Service prefixes from the speakers, merges
/// equal routes into ECMP routes in its kernel, runs BFD and helps graceful restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdConfig {
    /// The router's AS.
    pub local_as: u32,
    /// Hold time, seconds (keepalive a third of it).
    pub hold_time: u16,
    /// BFD transmit and receive interval, milliseconds.
    pub bfd_interval_ms: u32,
    /// BFD multiplier.
    pub bfd_multiplier: u8,
    /// Help neighbours' graceful restarts (keep their routes stale while they restart).
    pub graceful_restart: bool,
    /// `bfd graceful` instead of `bfd on`: a BFD failure starts a graceful restart (routes
    /// kept) instead of a hard reset. BIRD before 2.14 reads a neighbour's BFD AdminDown as
    /// a failure (fixed by BIRD commit aa70e14, "BFD: Improve handling of AdminDown"), so
    /// with BIRD 2.0.12 a speaker's planned restart keeps its routes only this way, at the
    /// price of keeping a dead node's routes for the restart time.
    pub bfd_graceful: bool,
    /// Prefixes accepted, as BIRD prefix patterns (e.g. `192.0.2.192/26{26,32}`).
    pub import_v4: Vec<String>,
    /// The same for IPv6.
    pub import_v6: Vec<String>,
    /// The neighbours.
    pub peers: Vec<BirdPeer>,
}

impl BirdConfig {
    /// The configuration text; BIRD logs to `log`.
    pub fn render(&self, log: &Path) -> String {
        let mut s = String::new();
        let import = |v: &[String]| {
            if v.is_empty() {
                "import none;".to_string()
            } else {
                format!(
                    "import filter {{ if net ~ [ {} ] then accept; reject; }};",
                    v.join(", ")
                )
            }
        };
        s.push_str(&format!(
            "# Written by ferrolb-lab for the lab's router.\n\
             router id {LAN_V4};\n\
             log \"{}\" all;\n\
             debug protocols {{ states, events }};\n\
             timeformat protocol iso long ms;\n\
             timeformat log iso long ms;\n\n\
             protocol device {{ scan time 2; }}\n\n\
             protocol kernel kernel4 {{\n  ipv4 {{ import none; export filter {{ if source = RTS_BGP then accept; reject; }}; }};\n  merge paths on limit 16;\n}}\n\
             protocol kernel kernel6 {{\n  ipv6 {{ import none; export filter {{ if source = RTS_BGP then accept; reject; }}; }};\n  merge paths on limit 16;\n}}\n\n\
             protocol bfd {{\n  interface \"{HOST_IFACE}\" {{ min rx interval {ms} ms; min tx interval {ms} ms; idle tx interval 1000 ms; multiplier {mult}; }};\n}}\n\n",
            log.display(),
            ms = self.bfd_interval_ms,
            mult = self.bfd_multiplier,
        ));
        let ka = (self.hold_time / 3).max(1);
        let gr = if self.graceful_restart {
            "graceful restart aware; graceful restart time 120;"
        } else {
            "graceful restart off;"
        };
        for (family, local, prefixes) in [
            ("ipv4", IpAddr::V4(LAN_V4), &self.import_v4),
            ("ipv6", IpAddr::V6(LAN_V6), &self.import_v6),
        ] {
            s.push_str(&format!(
                "template bgp k8s_{family} {{\n  local {local} as {las};\n  passive on;\n  hold time {hold}; keepalive time {ka};\n  connect retry time 2; error wait time 1, 5;\n  {gr}\n  {family} {{ {import} export none; }};\n}}\n",
                las = self.local_as,
                hold = self.hold_time,
                import = import(prefixes),
            ));
        }
        for p in &self.peers {
            let family = if p.address.is_ipv4() { "ipv4" } else { "ipv6" };
            s.push_str(&format!(
                "protocol bgp {} from k8s_{family} {{\n  neighbor {} as {};\n",
                p.name, p.address, p.asn
            ));
            if p.bfd {
                s.push_str(if self.bfd_graceful {
                    "  bfd graceful;\n"
                } else {
                    "  bfd on;\n"
                });
            }
            if let Some(pw) = &p.password {
                s.push_str(&format!("  password \"{pw}\";\n"));
            }
            s.push_str("}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;

    #[test]
    fn setup_builds_router_client_and_return_routes() {
        let plan = Plan::new("flb0a1b2c", 2).expect("plan");
        let r = Router::new("flb0a1b2c", Path::new("/tmp/x"));
        assert_eq!(r.netns, "flb0a1b2c-router");
        assert_eq!(r.client_netns, "flb0a1b2c-rclient");
        let cmds: Vec<String> = r
            .setup_commands(&plan.lan_netns(), &plan.nodes)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        let has = |s: &str| cmds.iter().any(|c| c.contains(s));
        assert!(has("net.ipv4.fib_multipath_hash_policy=1"));
        assert!(has("net.ipv6.fib_multipath_hash_policy=1"));
        assert!(has("addr add 198.51.100.1/24 dev eth0"));
        assert!(has(
            "-n flb0a1b2c-rclient route add default via 192.0.2.129"
        ));
        assert!(has(
            "-n flb0a1b2c-node-2 route add 192.0.2.128/26 via 198.51.100.1"
        ));
        assert!(has(
            "-n flb0a1b2c-node-1 -6 route add 2001:db8:2::/64 via 2001:db8::1"
        ));
        assert!(has("link set v-router master br0 up"));
        // Nothing targets the host's namespace: every ip command names a lab namespace.
        for c in &cmds {
            assert!(c.contains("flb0a1b2c-"), "{c}");
        }
    }

    #[test]
    fn bird_config_has_ecmp_bfd_md5() {
        let conf = BirdConfig {
            local_as: 64513,
            hold_time: 9,
            bfd_interval_ms: 100,
            bfd_multiplier: 3,
            graceful_restart: true,
            bfd_graceful: false,
            import_v4: vec!["192.0.2.192/26{26,32}".into()],
            import_v6: vec![],
            peers: vec![
                BirdPeer {
                    name: "node_1".into(),
                    address: "198.51.100.11".parse().expect("ip"),
                    asn: 64512,
                    password: Some("s3cret".into()),
                    bfd: true,
                },
                BirdPeer {
                    name: "node_1_v6".into(),
                    address: "2001:db8::11".parse().expect("ip"),
                    asn: 64512,
                    password: None,
                    bfd: false,
                },
            ],
        };
        let t = conf.render(Path::new("/tmp/bird.log"));
        for needle in [
            "merge paths on limit 16;",
            "protocol bfd",
            "min rx interval 100 ms",
            "multiplier 3",
            "graceful restart aware",
            "protocol bgp node_1 from k8s_ipv4",
            "neighbor 198.51.100.11 as 64512",
            "password \"s3cret\"",
            "bfd on;",
            "protocol bgp node_1_v6 from k8s_ipv6",
            "if net ~ [ 192.0.2.192/26{26,32} ] then accept",
            "ipv6 { import none; export none; };",
            "hold time 9; keepalive time 3;",
        ] {
            assert!(t.contains(needle), "missing {needle} in:\n{t}");
        }
    }

    #[test]
    fn next_hops_parse() {
        let ecmp = "192.0.2.200 proto bird metric 32 \n\tnexthop via 198.51.100.12 dev eth0 weight 1 \n\tnexthop via 198.51.100.11 dev eth0 weight 1 \n";
        assert_eq!(
            parse_next_hops(ecmp),
            vec![
                "198.51.100.11".parse::<IpAddr>().expect("ip"),
                "198.51.100.12".parse().expect("ip")
            ]
        );
        assert_eq!(
            parse_next_hops("192.0.2.200 via 198.51.100.13 dev eth0 proto bird metric 32\n"),
            vec!["198.51.100.13".parse::<IpAddr>().expect("ip")]
        );
        assert!(parse_next_hops("").is_empty());
    }
}
