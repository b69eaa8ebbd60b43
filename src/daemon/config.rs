//! The daemon's configuration: `/etc/monovirt/config.toml` (or `--config PATH`), with
//! command-line flags overriding it and built-in defaults under both.
//!
//! ```toml
//! node_name = "host1"              # default: the host name
//! data_dir = "/var/lib/monovirt"
//! log_format = "json"              # "text" (default) or "json"
//!
//! [api]
//! listen = ["127.0.0.1:8080"]      # plain HTTP: loopback addresses only, no token needed
//! tls_listen = ["0.0.0.0:6443"]    # HTTPS with bearer tokens: any address
//! tls_cert = "/etc/monovirt/tls.crt" # both or neither; neither: a CA and serving
//! tls_key = "/etc/monovirt/tls.key"  # certificate are made under the data dir
//! tls_san = ["api.example.com"]    # extra names for the made serving certificate
//!
//! [network]
//! default_subnet = "10.0.2.0/24"   # the pod network's subnet (masquerade, DHCP)
//!
//! [storage.classes]                # StorageClass name -> directory of its volumes
//! local = "/var/lib/monovirt/volumes"
//!
//! [vmm]
//! seccomp = "deny"                 # VM threads' filters: deny, kill, log or off
//! ```
//!
//! Every table rejects unknown keys, and every value is checked; an error names the
//! file, the line and the key, and stops start-up.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the config file is looked for when `--config` is not given. A missing file there
/// means "all defaults"; a missing file named by `--config` is an error.
pub const DEFAULT_PATH: &str = "/etc/monovirt/config.toml";
/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/monovirt";
/// The default plain-HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default network's subnet when none is configured (KubeVirt's masquerade default).
pub const DEFAULT_SUBNET: &str = "10.0.2.0/24";

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("Cannot read the config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key or value in the file is wrong.
    #[error("{path}{line}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        /// `: line N` when the parser knows it, else empty.
        line: String,
        /// The dotted key, `api.listen`.
        key: String,
        message: String,
    },
    /// A command-line flag's value is wrong (after parsing, e.g. a non-loopback `--listen`).
    #[error("--{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown log format {s:?} (text or json)")),
        }
    }
}

/// An IPv4 subnet, `10.0.2.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Ipv4Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a subnet (ADDRESS/PREFIX, e.g. 10.0.2.0/24)"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("prefix {prefix:?} must be a number from 8 to 30"))?;
        let mask = u32::MAX << (32 - prefix);
        if u32::from(network) & !mask != 0 {
            return Err(format!(
                "{s} has host bits set (the network is {}/{prefix})",
                Ipv4Addr::from(u32::from(network) & mask)
            ));
        }
        Ok(Self { network, prefix })
    }
}

impl std::fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl From<Ipv4Subnet> for ipnet::Ipv4Net {
    fn from(s: Ipv4Subnet) -> Self {
        ipnet::Ipv4Net::new(s.network, s.prefix).expect("the prefix was checked to be 8..=30")
    }
}

impl<'de> Deserialize<'de> for Ipv4Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The file as written: every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    node_name: Option<String>,
    data_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    api: ApiSection,
    network: NetworkSection,
    storage: StorageSection,
    vmm: VmmSection,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct VmmSection {
    seccomp: Option<crate::vmm::seccomp::Mode>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ApiSection {
    listen: Option<Vec<SocketAddr>>,
    tls_listen: Option<Vec<SocketAddr>>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_san: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NetworkSection {
    default_subnet: Option<Ipv4Subnet>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StorageSection {
    classes: BTreeMap<String, PathBuf>,
}

/// Command-line values that override the file (each `None` when the flag is absent).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub node_name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub listen: Option<Vec<SocketAddr>>,
    pub tls_listen: Option<Vec<SocketAddr>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Added to the file's `tls_san`.
    pub tls_san: Vec<String>,
    pub default_subnet: Option<Ipv4Subnet>,
    pub seccomp: Option<crate::vmm::seccomp::Mode>,
}

/// A certificate and key given by the operator (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The resolved configuration `monovirt serve` runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The config file read, if any.
    pub source: Option<PathBuf>,
    pub node_name: String,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// Plain HTTP, loopback only, trusted like the Unix socket.
    pub listen: Vec<SocketAddr>,
    /// HTTPS, every request authenticated with a bearer token.
    pub tls_listen: Vec<SocketAddr>,
    /// `None`: the server's own CA and serving certificate under the data dir.
    pub tls: Option<TlsFiles>,
    /// Extra DNS names or IP addresses for the server's own serving certificate.
    pub tls_san: Vec<String>,
    pub default_subnet: Ipv4Subnet,
    /// StorageClass name -> directory holding its volumes.
    pub storage_classes: BTreeMap<String, PathBuf>,
    /// What a VM thread's forbidden syscall gets.
    pub seccomp: crate::vmm::seccomp::Mode,
}

impl DaemonConfig {
    /// Reads `path` (or [`DEFAULT_PATH`] if it exists when `path` is `None`) and applies
    /// `flags` over it.
    pub fn load(path: Option<&Path>, flags: Overrides) -> Result<Self, ConfigError> {
        let (source, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                (Some(p.to_path_buf()), text)
            }
            None => match std::fs::read_to_string(DEFAULT_PATH) {
                Ok(t) => (Some(PathBuf::from(DEFAULT_PATH)), t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, String::new()),
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: PathBuf::from(DEFAULT_PATH),
                        source,
                    })
                }
            },
        };
        let shown = source
            .clone()
            .unwrap_or_else(|| PathBuf::from("(defaults)"));
        let file = parse(&text, &shown)?;
        resolve(file, flags, source)
    }

    /// The built-in defaults with `flags` over them (no file).
    pub fn from_flags(flags: Overrides) -> Result<Self, ConfigError> {
        resolve(FileConfig::default(), flags, None)
    }
}

fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| invalid(path, text, "", &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        invalid(path, text, &key, e.inner())
    })
}

/// The error for `key` (dotted, as serde_path_to_error spells it; `.` for the root),
/// with the field name of an "unknown field" message appended so the key is complete.
fn invalid(path: &Path, text: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    let mut key = if key == "." {
        String::new()
    } else {
        key.to_string()
    };
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
        .map(|(f, _)| f)
    {
        if key.rsplit('.').next() != Some(field) {
            key = if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
        }
    }
    let line = e
        .span()
        .map(|s| {
            let before = &text[..s.start.min(text.len())];
            format!(": line {}", before.matches('\n').count() + 1)
        })
        .unwrap_or_default();
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        key: if key.is_empty() {
            "(document)".into()
        } else {
            key
        },
        message,
    }
}

fn resolve(
    file: FileConfig,
    flags: Overrides,
    source: Option<PathBuf>,
) -> Result<DaemonConfig, ConfigError> {
    let shown = source
        .clone()
        .unwrap_or_else(|| PathBuf::from("(defaults)"));
    let bad = |key: &str, message: String| ConfigError::Invalid {
        path: shown.clone(),
        line: String::new(),
        key: key.to_string(),
        message,
    };
    let node_name = match (flags.node_name, file.node_name) {
        (Some(n), _) => check_node_name(&n).map_err(|m| ConfigError::Flag {
            flag: "node-name",
            message: m,
        })?,
        (None, Some(n)) => check_node_name(&n).map_err(|m| bad("node_name", m))?,
        (None, None) => default_node_name(),
    };
    let data_dir = flags
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let listen = match (flags.listen, file.api.listen) {
        (Some(l), _) => {
            check_loopback(&l).map_err(|message| ConfigError::Flag {
                flag: "listen",
                message,
            })?;
            l
        }
        (None, Some(l)) => {
            check_loopback(&l).map_err(|m| bad("api.listen", m))?;
            l
        }
        (None, None) => vec![DEFAULT_LISTEN.parse().expect("a valid literal address")],
    };
    let tls_listen = flags.tls_listen.or(file.api.tls_listen).unwrap_or_default();
    let cert = flags.tls_cert.or(file.api.tls_cert);
    let key = flags.tls_key.or(file.api.tls_key);
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(bad(
                "api.tls_key",
                "tls_cert is set, so tls_key (or --tls-key) is required too".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(bad(
                "api.tls_cert",
                "tls_key is set, so tls_cert (or --tls-cert) is required too".into(),
            ))
        }
    };
    for (name, dir) in &file.storage.classes {
        let errs = api::validation::dns1123_subdomain(name);
        if let Some(e) = errs.first() {
            return Err(bad(&format!("storage.classes.{name}"), e.clone()));
        }
        if !dir.is_absolute() {
            return Err(bad(
                &format!("storage.classes.{name}"),
                format!("{} is not an absolute path", dir.display()),
            ));
        }
    }
    Ok(DaemonConfig {
        source,
        node_name,
        data_dir,
        log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
        listen,
        tls_listen,
        tls,
        tls_san: file.api.tls_san.into_iter().chain(flags.tls_san).collect(),
        default_subnet: flags
            .default_subnet
            .or(file.network.default_subnet)
            .unwrap_or_else(|| DEFAULT_SUBNET.parse().expect("a valid literal subnet")),
        storage_classes: file.storage.classes,
        seccomp: flags.seccomp.or(file.vmm.seccomp).unwrap_or_default(),
    })
}

/// Plain HTTP carries tokens and objects in clear text and is served without
/// authentication, so it is only allowed where nothing but this host can reach it.
fn check_loopback(addrs: &[SocketAddr]) -> Result<(), String> {
    match addrs.iter().find(|a| !a.ip().is_loopback()) {
        None => Ok(()),
        Some(a) => Err(format!(
            "{a} is not a loopback address: plain HTTP is served on loopback only; \
             serve other addresses with TLS (api.tls_listen, --tls-listen)"
        )),
    }
}

fn check_node_name(name: &str) -> Result<String, String> {
    match api::validation::dns1123_subdomain(name).into_iter().next() {
        None => Ok(name.to_string()),
        Some(e) => Err(format!("{name:?}: {e}")),
    }
}

/// The host name, lower-cased, as kubelet names its Node; `localhost` if unreadable.
fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| api::validation::dns1123_subdomain(h).is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str, flags: Overrides) -> Result<DaemonConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("config.toml");
        std::fs::write(&p, text).expect("write");
        DaemonConfig::load(Some(&p), flags)
    }

    #[test]
    fn full_file_and_flag_overrides() {
        let c = load_text(
            r#"
node_name = "host1"
data_dir = "/srv/monovirt"
log_format = "json"
[api]
listen = ["127.0.0.1:9000", "[::1]:9000"]
tls_listen = ["0.0.0.0:6443"]
tls_cert = "/etc/monovirt/tls.crt"
tls_key = "/etc/monovirt/tls.key"
[network]
default_subnet = "10.10.0.0/16"
[storage.classes]
local = "/srv/volumes"
[vmm]
seccomp = "kill"
"#,
            Overrides {
                data_dir: Some("/tmp/x".into()),
                ..Default::default()
            },
        )
        .expect("valid");
        assert_eq!(c.node_name, "host1");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.tls_listen, vec!["0.0.0.0:6443".parse().expect("addr")]);
        assert_eq!(c.default_subnet.to_string(), "10.10.0.0/16");
        assert_eq!(c.storage_classes["local"], PathBuf::from("/srv/volumes"));
        assert!(c.tls.is_some());
        assert_eq!(c.seccomp, crate::vmm::seccomp::Mode::Kill);
    }

    #[test]
    fn defaults_without_a_file() {
        let c = DaemonConfig::from_flags(Overrides::default()).expect("defaults");
        assert_eq!(c.listen, vec!["127.0.0.1:8080".parse().expect("addr")]);
        assert!(c.tls_listen.is_empty());
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.default_subnet.to_string(), DEFAULT_SUBNET);
    }

    #[test]
    fn unknown_keys_are_named_with_their_table() {
        let e = load_text("[api]\nlisten = []\nlsten = 1\n", Overrides::default())
            .expect_err("unknown key");
        let msg = e.to_string();
        assert!(
            msg.contains("config.toml: line 3: api.lsten: unknown field"),
            "{msg}"
        );
        let e = load_text("colour = 1\n", Overrides::default()).expect_err("unknown key");
        assert!(e.to_string().contains(": colour: unknown field"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[api]\nlisten = [\"nope\"]\n", "api.listen"),
            (
                "[api]\nlisten = [\"0.0.0.0:8080\"]\n",
                "api.listen: 0.0.0.0:8080 is not a loopback",
            ),
            ("log_format = \"xml\"\n", "log_format"),
            (
                "[network]\ndefault_subnet = \"10.0.2.1/24\"\n",
                "network.default_subnet: 10.0.2.1/24 has host bits set",
            ),
            ("node_name = \"Bad_Name\"\n", "node_name"),
            (
                "[storage.classes]\nlocal = \"relative\"\n",
                "storage.classes.local: relative is not an absolute path",
            ),
            ("[api]\ntls_cert = \"/a\"\n", "api.tls_key"),
            (
                "[vmm]\nseccomp = \"strict\"\n",
                "vmm.seccomp: unknown variant `strict`",
            ),
        ];
        for (text, want) in cases {
            let e = load_text(text, Overrides::default()).expect_err(text);
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_non_loopback_listen_flag_is_refused() {
        let e = DaemonConfig::from_flags(Overrides {
            listen: Some(vec!["192.0.2.1:80".parse().expect("addr")]),
            ..Default::default()
        })
        .expect_err("not loopback");
        assert!(e.to_string().starts_with("--listen: 192.0.2.1:80"), "{e}");
    }

    #[test]
    fn a_missing_named_file_is_an_error() {
        let e = DaemonConfig::load(
            Some(Path::new("/nonexistent/monovirt.toml")),
            Overrides::default(),
        )
        .expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/monovirt.toml"), "{e}");
    }
}
