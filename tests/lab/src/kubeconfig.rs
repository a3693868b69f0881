//! Rendering of the lab's kubeconfig files (host side, node side, controller manager, and
//! ServiceAccount tokens for processes that stand in for pods).
//!
//! Pure: returns YAML text; the caller writes it. Certificate paths are absolute so the files
//! work from any working directory, for kubectl and for `kube::Config::from_custom_kubeconfig`.

use std::path::Path;

/// What one kubeconfig contains: a single cluster, user and context, all named `ferrolb-lab`.
#[derive(Debug, Clone, Copy)]
pub struct KubeconfigSpec<'a> {
    /// API server URL, e.g. `https://127.0.0.1:40123`.
    pub server: &'a str,
    /// CA certificate that signed the serving certificate.
    pub ca: &'a Path,
    /// Who the client is.
    pub user: Credentials<'a>,
}

/// How a kubeconfig's user authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// A client certificate and its key (the lab's own users).
    Certificate {
        /// Client certificate.
        cert: &'a Path,
        /// Client key.
        key: &'a Path,
    },
    /// A bearer token, e.g. a ServiceAccount's from `kubectl create token`.
    Token(&'a str),
}

/// Name used for the cluster, user and context.
pub const NAME: &str = "ferrolb-lab";

/// Renders the kubeconfig as YAML. Strings are written as JSON-quoted scalars, which are valid
/// YAML whatever the path contains.
pub fn render(spec: &KubeconfigSpec<'_>) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let p = |p: &Path| q(&p.to_string_lossy());
    let user = match spec.user {
        Credentials::Certificate { cert, key } => format!(
            "    client-certificate: {}\n    client-key: {}\n",
            p(cert),
            p(key)
        ),
        Credentials::Token(token) => format!("    token: {}\n", q(token)),
    };
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {NAME}\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority: {ca}\n\
         users:\n\
         - name: {NAME}\n  \
           user:\n\
         {user}\
         contexts:\n\
         - name: {NAME}\n  \
           context:\n    \
             cluster: {NAME}\n    \
             user: {NAME}\n\
         current-context: {NAME}\n",
        server = q(spec.server),
        ca = p(spec.ca),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_kubeconfig_kube_rs_accepts() {
        let text = render(&KubeconfigSpec {
            server: "https://127.0.0.1:40123",
            ca: Path::new("/run/lab dir/pki/ca.crt"),
            user: Credentials::Certificate {
                cert: Path::new("/run/lab dir/pki/admin.crt"),
                key: Path::new("/run/lab dir/pki/admin.key"),
            },
        });
        let kc = kube::config::Kubeconfig::from_yaml(&text).expect("kube-rs parses it");
        assert_eq!(kc.current_context.as_deref(), Some(NAME));
        let cluster = kc.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:40123"));
        assert_eq!(
            cluster.certificate_authority.as_deref(),
            Some("/run/lab dir/pki/ca.crt")
        );
        let user = kc.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(
            user.client_key.as_deref(),
            Some("/run/lab dir/pki/admin.key")
        );
        let ctx = kc.contexts[0].context.as_ref().expect("context");
        assert_eq!(ctx.cluster, NAME);
        assert_eq!(ctx.user.as_deref(), Some(NAME));
    }

    #[test]
    fn renders_a_token_kubeconfig_kube_rs_accepts() {
        let text = render(&KubeconfigSpec {
            server: "https://198.51.100.2:6443",
            ca: Path::new("/run/lab/pki/ca.crt"),
            user: Credentials::Token("eyJhbGciOi.J9\"x"),
        });
        let kc = kube::config::Kubeconfig::from_yaml(&text).expect("kube-rs parses it");
        let user = kc.auth_infos[0].auth_info.as_ref().expect("user");
        assert!(user.token.is_some(), "a token");
        assert!(text.contains(r#"    token: "eyJhbGciOi.J9\"x""#), "{text}");
        assert!(user.client_certificate.is_none() && user.client_key.is_none());
    }
}
