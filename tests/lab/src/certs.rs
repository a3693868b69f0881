//! The lab's PKI, made with the `openssl` CLI: a CA, the API server's serving certificate,
//! client certificates, and the service-account signing key pair. All keys are EC P-256 in
//! PKCS#8 PEM, accepted by both rustls (kube-rs) and Go.
//!
//! Owns the files under `<run>/pki/`. It must not start long-running processes or touch the
//! network; the config text is rendered by pure functions so it can be unit tested.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::{CP_IPV4, CP_IPV6, FIRST_SERVICE_IP};

/// Why the PKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `openssl` could not be started.
    #[error("cannot run openssl (install it with tests/lab/scripts/setup-host.sh): {0}")]
    Spawn(std::io::Error),
    /// `openssl` failed.
    #[error("openssl {args} failed: {stderr}")]
    Openssl {
        /// Its arguments.
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// What a leaf certificate is for (sets `extendedKeyUsage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server.
    Server,
    /// A TLS client.
    Client,
}

impl Usage {
    /// The `extendedKeyUsage` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Usage::Server => "serverAuth",
            Usage::Client => "clientAuth",
        }
    }
}

/// A certificate to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// File stem: `<stem>.crt` and `<stem>.key`.
    pub stem: &'static str,
    /// Subject common name (the user name for client certs).
    pub cn: String,
    /// Subject organisations (groups for client certs).
    pub orgs: Vec<String>,
    /// Server or client.
    pub usage: Usage,
    /// DNS subject alternative names.
    pub dns: Vec<String>,
    /// IP subject alternative names.
    pub ips: Vec<IpAddr>,
}

/// The serving certificate of kube-apiserver: every name it is reached by, on the host
/// (127.0.0.1 through the relay), on the LAN, and through the `kubernetes` Service.
pub fn apiserver_spec() -> CertSpec {
    CertSpec {
        stem: "apiserver",
        cn: "kube-apiserver".into(),
        orgs: vec![],
        usage: Usage::Server,
        dns: [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
        ]
        .map(String::from)
        .to_vec(),
        ips: vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::V4(CP_IPV4),
            IpAddr::V6(CP_IPV6),
            IpAddr::V4(FIRST_SERVICE_IP),
        ],
    }
}

/// A client certificate for `cn` in groups `orgs`.
pub fn client_spec(stem: &'static str, cn: &str, orgs: &[&str]) -> CertSpec {
    CertSpec {
        stem,
        cn: cn.into(),
        orgs: orgs.iter().map(|o| (*o).to_string()).collect(),
        usage: Usage::Client,
        dns: vec![],
        ips: vec![],
    }
}

/// `openssl req` config for the self-signed CA.
pub fn ca_config() -> String {
    "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n\
     [dn]\nCN = ferrolb-lab-ca\n\
     [ext]\nbasicConstraints = critical, CA:TRUE\n\
     keyUsage = critical, keyCertSign, cRLSign, digitalSignature\n\
     subjectKeyIdentifier = hash\n"
        .to_string()
}

/// `openssl req` config for a leaf certificate signed by the CA (`req -x509 -CA`).
pub fn leaf_config(spec: &CertSpec) -> String {
    let mut c =
        String::from("[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ext\n");
    c.push_str("[dn]\n");
    // Repeated fields need distinct keys; openssl ignores the `N.` prefix.
    for (i, o) in spec.orgs.iter().enumerate() {
        let _ = writeln!(c, "{i}.O = {o}");
    }
    let _ = writeln!(c, "CN = {}", spec.cn);
    c.push_str("[ext]\nbasicConstraints = critical, CA:FALSE\n");
    c.push_str("keyUsage = critical, digitalSignature\n");
    let _ = writeln!(c, "extendedKeyUsage = {}", spec.usage.as_str());
    c.push_str("subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n");
    if !spec.dns.is_empty() || !spec.ips.is_empty() {
        c.push_str("subjectAltName = @alt\n[alt]\n");
        for (i, d) in spec.dns.iter().enumerate() {
            let _ = writeln!(c, "DNS.{} = {d}", i + 1);
        }
        for (i, ip) in spec.ips.iter().enumerate() {
            let _ = writeln!(c, "IP.{} = {ip}", i + 1);
        }
    }
    c
}

/// Paths of the generated PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// Directory holding everything.
    pub dir: PathBuf,
}

impl Pki {
    /// CA certificate.
    pub fn ca_crt(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// Certificate `<stem>.crt`.
    pub fn crt(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.crt"))
    }
    /// Private key `<stem>.key`.
    pub fn key(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.key"))
    }
    /// Service-account signing key (private).
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    /// Service-account verification key (public).
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
}

/// Stem of the admin client certificate (CN=ferrolb-lab-admin, O=system:masters).
pub const ADMIN: &str = "admin";
/// Stem of kube-controller-manager's client certificate.
pub const CONTROLLER_MANAGER: &str = "controller-manager";
/// Stem of the API server's serving certificate.
pub const APISERVER: &str = "apiserver";

/// The leaf certificates every lab gets.
pub fn lab_specs() -> Vec<CertSpec> {
    vec![
        apiserver_spec(),
        client_spec(ADMIN, "ferrolb-lab-admin", &["system:masters"]),
        // With --use-service-account-credentials=false every controller acts as this user,
        // and the namespace and garbage collectors must be able to delete anything.
        client_spec(
            CONTROLLER_MANAGER,
            "system:kube-controller-manager",
            &["system:masters"],
        ),
    ]
}

/// Generates the CA, the lab's leaf certificates and the service-account keys in `dir`.
/// `serials` supplies distinct random serial numbers (hex), one per certificate.
pub fn generate(dir: &Path, serials: &[String]) -> Result<Pki, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let pki = Pki {
        dir: dir.to_path_buf(),
    };
    let serial = |i: usize| {
        serials
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("{:x}", i + 1))
    };
    let path_str = |p: PathBuf| p.to_string_lossy().into_owned();

    let ca_cnf = dir.join("ca.cnf");
    write(&ca_cnf, &ca_config())?;
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-noenc",
        "-keyout",
        &path_str(pki.key("ca")),
        "-out",
        &path_str(pki.ca_crt()),
        "-config",
        &path_str(ca_cnf),
        "-days",
        "3650",
        "-set_serial",
        &format!("0x{}", serial(0)),
    ])?;

    for (i, spec) in lab_specs().iter().enumerate() {
        let cnf = dir.join(format!("{}.cnf", spec.stem));
        write(&cnf, &leaf_config(spec))?;
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-noenc",
            "-keyout",
            &path_str(pki.key(spec.stem)),
            "-out",
            &path_str(pki.crt(spec.stem)),
            "-config",
            &path_str(cnf),
            "-CA",
            &path_str(pki.ca_crt()),
            "-CAkey",
            &path_str(pki.key("ca")),
            "-days",
            "365",
            "-set_serial",
            &format!("0x{}", serial(i + 1)),
        ])?;
    }

    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &path_str(pki.sa_key()),
    ])?;
    openssl(&[
        "pkey",
        "-in",
        &path_str(pki.sa_key()),
        "-pubout",
        "-out",
        &path_str(pki.sa_pub()),
    ])?;
    Ok(pki)
}

fn write(path: &Path, text: &str) -> Result<(), CertError> {
    std::fs::write(path, text).map_err(|source| CertError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn openssl(args: &[&str]) -> Result<(), CertError> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(CertError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(CertError::Openssl {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apiserver_cert_covers_every_name_it_is_reached_by() {
        let cfg = leaf_config(&apiserver_spec());
        for needle in [
            "IP.1 = 127.0.0.1",
            "IP.2 = 198.51.100.2",
            "IP.3 = 2001:db8::2",
            "IP.4 = 203.0.113.1",
            "DNS.1 = kubernetes\n",
            "DNS.4 = kubernetes.default.svc.cluster.local",
            "basicConstraints = critical, CA:FALSE",
            "extendedKeyUsage = serverAuth",
            "keyUsage = critical, digitalSignature",
        ] {
            assert!(cfg.contains(needle), "missing {needle:?} in\n{cfg}");
        }
    }

    #[test]
    fn client_cert_has_groups_and_no_san() {
        let cfg = leaf_config(&client_spec(
            "admin",
            "ferrolb-lab-admin",
            &["system:masters"],
        ));
        assert!(
            cfg.contains("0.O = system:masters\nCN = ferrolb-lab-admin\n"),
            "{cfg}"
        );
        assert!(cfg.contains("extendedKeyUsage = clientAuth"), "{cfg}");
        assert!(!cfg.contains("subjectAltName"), "{cfg}");
    }

    #[test]
    fn ca_is_a_ca() {
        let cfg = ca_config();
        assert!(cfg.contains("basicConstraints = critical, CA:TRUE"));
        assert!(cfg.contains("keyCertSign"));
    }
}
