//! Rendering of the lab's kubeconfig files (host side, node side, controller manager).
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
    /// Client certificate.
    pub cert: &'a Path,
    /// Client key.
    pub key: &'a Path,
}

/// Name used for the cluster, user and context.
pub const NAME: &str = "ferrolb-lab";

/// Renders the kubeconfig as YAML. Strings are written as JSON-quoted scalars, which are valid
/// YAML whatever the path contains.
pub fn render(spec: &KubeconfigSpec<'_>) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let p = |p: &Path| q(&p.to_string_lossy());
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
           user:\n    \
             client-certificate: {cert}\n    \
             client-key: {key}\n\
         contexts:\n\
         - name: {NAME}\n  \
           context:\n    \
             cluster: {NAME}\n    \
             user: {NAME}\n\
         current-context: {NAME}\n",
        server = q(spec.server),
        ca = p(spec.ca),
        cert = p(spec.cert),
        key = p(spec.key),
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
            cert: Path::new("/run/lab dir/pki/admin.crt"),
            key: Path::new("/run/lab dir/pki/admin.key"),
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
}
