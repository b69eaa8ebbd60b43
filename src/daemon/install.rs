//! `monovirt install`: puts this binary, the systemd unit and the default configuration
//! where the unit expects them. The unit and config are the repository's
//! `deploy/monovirt.service` and `deploy/config.toml`, built into the binary. An
//! existing config file is never overwritten (it is the operator's).
//!
//! | what | where (under `--root`, default `/`) |
//! | --- | --- |
//! | the binary | `usr/local/bin/monovirt` |
//! | the unit | `etc/systemd/system/monovirt.service` |
//! | the config | `etc/monovirt/config.toml` (mode 0600) |

use std::path::{Path, PathBuf};

/// The unit file shipped in `deploy/`.
pub const UNIT: &str = include_str!("../../deploy/monovirt.service");
/// The default config shipped in `deploy/`.
pub const DEFAULT_CONFIG: &str = include_str!("../../deploy/config.toml");

/// Errors installing.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("Cannot find this program's own binary")]
    CurrentExe(#[source] std::io::Error),
    #[error("Cannot write {0}")]
    Write(PathBuf, #[source] std::io::Error),
}

/// What [`install`] did, one line per file.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
}

/// Installs under `root`.
pub fn install(root: &Path) -> Result<Report, InstallError> {
    let exe = std::env::current_exe().map_err(InstallError::CurrentExe)?;
    install_from(&exe, root)
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), InstallError> {
    let err = |e| InstallError::Write(path.to_path_buf(), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    crate::apiserver::tls::write_private(path, data, mode).map_err(err)
}

fn install_from(exe: &Path, root: &Path) -> Result<Report, InstallError> {
    let mut report = Report::default();
    let bin = root.join("usr/local/bin/monovirt");
    // Copy, then rename over: a running daemon keeps its (old) inode.
    let data = std::fs::read(exe).map_err(|e| InstallError::Write(exe.to_path_buf(), e))?;
    if exe.canonicalize().ok() != bin.canonicalize().ok() {
        write(&bin, &data, 0o755)?;
        report.lines.push(format!("installed {}", bin.display()));
    }
    let unit = root.join("etc/systemd/system/monovirt.service");
    write(&unit, UNIT.as_bytes(), 0o644)?;
    report.lines.push(format!("installed {}", unit.display()));
    let config = root.join("etc/monovirt/config.toml");
    if config.exists() {
        report
            .lines
            .push(format!("kept {} (already present)", config.display()));
    } else {
        write(&config, DEFAULT_CONFIG.as_bytes(), 0o600)?;
        report.lines.push(format!("installed {}", config.display()));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config::{DaemonConfig, Overrides};

    #[test]
    fn installs_and_keeps_an_existing_config() {
        let root = tempfile::tempdir().expect("tempdir");
        let exe = root.path().join("built-monovirt");
        std::fs::write(&exe, b"binary").expect("exe");
        let r = install_from(&exe, root.path()).expect("install");
        assert_eq!(r.lines.len(), 3, "{:?}", r.lines);
        assert_eq!(
            std::fs::read(root.path().join("usr/local/bin/monovirt")).expect("bin"),
            b"binary"
        );
        let cfg = root.path().join("etc/monovirt/config.toml");
        // The shipped config is valid.
        let c = DaemonConfig::load(Some(&cfg), Overrides::default()).expect("valid default");
        assert!(c.listen.is_empty());
        assert_eq!(c.tls_listen.len(), 1);
        std::fs::write(&cfg, "log_format = \"json\"\n").expect("edit");
        let r = install_from(&exe, root.path()).expect("again");
        assert!(r.lines[2].starts_with("kept"), "{:?}", r.lines);
        assert_eq!(
            std::fs::read_to_string(&cfg).expect("cfg"),
            "log_format = \"json\"\n"
        );
    }
}
