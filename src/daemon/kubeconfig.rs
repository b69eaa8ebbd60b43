//! The kubeconfig `monovirt kubeconfig` prints: one cluster (the HTTPS address and the CA
//! that signed the serving certificate, inline), one user (a bearer token), one context
//! made current, so the stock `kubectl` works with it as it is.

use base64::Engine;
use serde_json::json;

/// Renders the kubeconfig as YAML.
pub fn render(server: &str, ca_pem: &str, token: &str, namespace: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "monovirt",
            "cluster": {
                "server": server,
                "certificate-authority-data": ca,
            },
        }],
        "users": [{
            "name": "monovirt",
            "user": { "token": token },
        }],
        "contexts": [{
            "name": "monovirt",
            "context": {
                "cluster": "monovirt",
                "user": "monovirt",
                "namespace": namespace,
            },
        }],
        "current-context": "monovirt",
        "preferences": {},
    });
    serde_yaml_ng::to_string(&doc).expect("a JSON value always renders as YAML")
}

/// The `https://` URL clients on this host use for `addr`: an unspecified address
/// (`0.0.0.0`, `::`) becomes the loopback address, which the serving certificate covers.
pub fn server_url(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    format!("https://{ip}:{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_shape() {
        let y = render("https://127.0.0.1:6443", "PEM", "abc.def", "default");
        let v: serde_json::Value = serde_yaml_ng::from_str(&y).expect("YAML");
        assert_eq!(v["current-context"], "monovirt");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(v["users"][0]["user"]["token"], "abc.def");
        assert_eq!(
            server_url("0.0.0.0:6443".parse().expect("addr")),
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            server_url("[::]:1".parse().expect("addr")),
            "https://[::1]:1"
        );
        assert_eq!(
            server_url("192.0.2.7:6443".parse().expect("addr")),
            "https://192.0.2.7:6443"
        );
    }
}
