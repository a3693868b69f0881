//! The API relays: byte-for-byte copy loops between a listening endpoint and a target
//! endpoint (TCP or Unix socket). One runs inside the cp namespace (Unix socket in the run
//! directory -> 127.0.0.1:6443), one in the host namespace (127.0.0.1:<port> -> that socket),
//! so the host reaches the API server without any interface in the host namespace. TLS passes
//! through untouched.
//!
//! Owns the `ferrolb-lab relay` runtime. It never inspects traffic; it exits when its watch path
//! (the run directory) disappears or its lifetime ends, so an orphaned relay cannot linger.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Most connections a relay carries at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 512;
/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the watch path is checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// Why a relay stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// An endpoint string could not be parsed.
    #[error("invalid endpoint {0:?}: expected tcp:HOST:PORT or unix:PATH")]
    Endpoint(String),
    /// Binding the listener failed.
    #[error("listen on {endpoint}: {source}")]
    Listen {
        /// The endpoint.
        endpoint: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The port file could not be written.
    #[error("write port file {path}: {source}")]
    PortFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Accepting failed.
    #[error("accept: {0}")]
    Accept(std::io::Error),
}

/// One side of a relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address (port 0 when listening picks a free port).
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = RelayError;

    fn from_str(s: &str) -> Result<Endpoint, RelayError> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            return addr
                .parse()
                .map(Endpoint::Tcp)
                .map_err(|_| RelayError::Endpoint(s.to_string()));
        }
        match s.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Ok(Endpoint::Unix(PathBuf::from(path))),
            _ => Err(RelayError::Endpoint(s.to_string())),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What a relay does.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// Where to accept connections.
    pub listen: Endpoint,
    /// Where to forward each one.
    pub connect: Endpoint,
    /// If set, the bound TCP port is written here once listening (atomically).
    pub port_file: Option<PathBuf>,
    /// If set, the relay exits once this path no longer exists.
    pub watch: Option<PathBuf>,
    /// The relay exits after this long regardless.
    pub max_lifetime: Duration,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Listener {
    async fn accept(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Listener::Unix(l) => Box::new(l.accept().await?.0),
        })
    }
}

async fn connect(target: &Endpoint) -> std::io::Result<Box<dyn Stream>> {
    Ok(match target {
        Endpoint::Tcp(a) => {
            let s = TcpStream::connect(a).await?;
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
        Endpoint::Unix(p) => Box::new(UnixStream::connect(p).await?),
    })
}

/// Runs the relay until the watch path disappears or the lifetime ends.
pub async fn run(spec: RelaySpec) -> Result<(), RelayError> {
    let listen_err = |source| RelayError::Listen {
        endpoint: spec.listen.to_string(),
        source,
    };
    let listener = match &spec.listen {
        Endpoint::Tcp(addr) => {
            let l = TcpListener::bind(addr).await.map_err(listen_err)?;
            if let Some(file) = &spec.port_file {
                let port = l.local_addr().map_err(listen_err)?.port();
                write_port_file(file, port)?;
            }
            Listener::Tcp(l)
        }
        Endpoint::Unix(path) => {
            // A socket file left by a killed relay would make bind fail.
            let _ = std::fs::remove_file(path);
            Listener::Unix(UnixListener::bind(path).map_err(listen_err)?)
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let deadline = tokio::time::Instant::now() + spec.max_lifetime;
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
            _ = watch.tick() => {
                if spec.watch.as_ref().is_some_and(|p| !p.exists()) {
                    return Ok(());
                }
            }
            accepted = listener.accept() => {
                let mut inbound = match accepted {
                    Ok(s) => s,
                    // Running out of descriptors is transient; back off instead of spinning.
                    Err(e) if is_transient(&e) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => return Err(RelayError::Accept(e)),
                };
                // Over the limit the connection is closed at once, which clients retry.
                let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                let target = spec.connect.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    // When the target is down (API server restarting) the client sees the
                    // connection close, like a refused connection.
                    if let Ok(Ok(mut outbound)) =
                        tokio::time::timeout(CONNECT_TIMEOUT, connect(&target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
    ) || e.raw_os_error().is_some_and(|c| c == 23 || c == 24) // ENFILE, EMFILE
}

fn write_port_file(path: &std::path::Path, port: u16) -> Result<(), RelayError> {
    let err = |source| RelayError::PortFile {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, port.to_string()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[test]
    fn endpoints_parse_and_print() {
        let tcp: Endpoint = "tcp:127.0.0.1:0".parse().expect("tcp");
        assert_eq!(tcp, Endpoint::Tcp("127.0.0.1:0".parse().expect("addr")));
        assert_eq!(tcp.to_string(), "tcp:127.0.0.1:0");
        let unix: Endpoint = "unix:/run/x/api.sock".parse().expect("unix");
        assert_eq!(unix, Endpoint::Unix("/run/x/api.sock".into()));
        assert_eq!(unix.to_string(), "unix:/run/x/api.sock");
        for bad in ["tcp:nope", "unix:", "udp:1.2.3.4:5", "127.0.0.1:80"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn relays_tcp_through_a_unix_socket_and_exits_when_watch_path_goes() {
        let dir =
            std::env::temp_dir().join(format!("ferrolb-lab-relay-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // An echo server standing in for the API server.
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("echo bind");
        let echo_addr = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let sock = dir.join("api.sock");
        let port_file = dir.join("port");
        let inner = tokio::spawn(run(RelaySpec {
            listen: Endpoint::Unix(sock.clone()),
            connect: Endpoint::Tcp(echo_addr),
            port_file: None,
            watch: Some(dir.clone()),
            max_lifetime: Duration::from_secs(60),
        }));
        let outer = tokio::spawn(run(RelaySpec {
            listen: "tcp:127.0.0.1:0".parse().expect("ep"),
            connect: Endpoint::Unix(sock.clone()),
            port_file: Some(port_file.clone()),
            watch: Some(dir.clone()),
            max_lifetime: Duration::from_secs(60),
        }));
        let mut port = None;
        for _ in 0..200 {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                port = p.trim().parse::<u16>().ok();
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let port = port.expect("relay wrote its port");
        let mut c = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        c.write_all(b"hello through two relays")
            .await
            .expect("write");
        let mut buf = [0u8; 24];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(&buf, b"hello through two relays");

        std::fs::remove_dir_all(&dir).expect("cleanup");
        let done =
            tokio::time::timeout(Duration::from_secs(5), async { (inner.await, outer.await) })
                .await
                .expect("relays exit once the watch path is gone");
        assert!(matches!(done.0, Ok(Ok(()))));
        assert!(matches!(done.1, Ok(Ok(()))));
    }
}
