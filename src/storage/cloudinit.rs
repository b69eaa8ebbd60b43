//! cloud-init data disks: a VMI's `cloudInitNoCloud` volume becomes a vfat disk labelled
//! `cidata` holding `meta-data`, `user-data` and `network-config` (cloud-init's NoCloud
//! data source); `cloudInitConfigDrive` becomes a vfat disk labelled `config-2` holding
//! `openstack/latest/{meta_data.json,user_data,network_data.json}` (the ConfigDrive data
//! source). vfat because a pure-Rust writer exists (`fatfs`) and cloud-init reads both
//! vfat and iso9660 for both sources; Linux guests need the `vfat` module.

use api::kubevirt::volume::CloudInitSource;
use base64::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;

/// Errors rendering cloud-init data.
#[derive(Debug, thiserror::Error)]
pub enum CloudInitError {
    #[error("{0} is not valid base64")]
    Base64(&'static str),
    #[error("Secret {0} not found")]
    SecretMissing(String),
    #[error("Secret {0} has no key {1}")]
    SecretKey(String, &'static str),
    #[error("Reading secret {0} failed: {1}")]
    SecretRead(String, String),
    #[error("Writing the cloud-init disk {0} failed")]
    Write(std::path::PathBuf, #[source] std::io::Error),
}

/// Which data source layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    NoCloud,
    ConfigDrive,
}

impl Flavor {
    /// The volume label cloud-init looks for.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoCloud => "cidata",
            Self::ConfigDrive => "config-2",
        }
    }
}

/// The instance a disk is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The VMI's uid (the instance id: a new VMI is a new instance to cloud-init).
    pub uid: String,
    /// The host name (the VMI's `spec.hostname`, else its name).
    pub hostname: String,
}

/// Resolved user and network data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Data {
    pub user_data: Option<Vec<u8>>,
    pub network_data: Option<Vec<u8>>,
}

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, CloudInitError> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| CloudInitError::Base64(field))
}

/// The data of `src`; `secret` reads a Secret's `data` map by name (values base64).
pub async fn resolve<F, Fut>(src: &CloudInitSource, secret: F) -> Result<Data, CloudInitError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Value>, String>>,
{
    let from_secret = |name: String, keys: [&'static str; 2]| {
        let fetched = secret(name.clone());
        async move {
            let s = fetched
                .await
                .map_err(|e| CloudInitError::SecretRead(name.clone(), e))?
                .ok_or_else(|| CloudInitError::SecretMissing(name.clone()))?;
            for k in keys {
                if let Some(v) = s.get("data").and_then(|d| d.get(k)).and_then(Value::as_str) {
                    return b64(k, v);
                }
            }
            Err(CloudInitError::SecretKey(name, keys[0]))
        }
    };
    let user_data = if let Some(r) = &src.secret_ref {
        Some(from_secret(r.name.clone(), ["userdata", "userData"]).await?)
    } else if let Some(s) = &src.user_data_base64 {
        Some(b64("userDataBase64", s)?)
    } else {
        src.user_data.as_ref().map(|s| s.as_bytes().to_vec())
    };
    let network_data = if let Some(r) = &src.network_data_secret_ref {
        Some(from_secret(r.name.clone(), ["networkdata", "networkData"]).await?)
    } else if let Some(s) = &src.network_data_base64 {
        Some(b64("networkDataBase64", s)?)
    } else {
        src.network_data.as_ref().map(|s| s.as_bytes().to_vec())
    };
    Ok(Data {
        user_data,
        network_data,
    })
}

/// The files of a disk: path components and contents.
pub fn files(
    flavor: Flavor,
    instance: &Instance,
    data: &Data,
) -> Vec<(Vec<&'static str>, Vec<u8>)> {
    let mut out = Vec::new();
    match flavor {
        Flavor::NoCloud => {
            let meta = format!(
                "instance-id: {}\nlocal-hostname: {}\n",
                instance.uid, instance.hostname
            );
            out.push((vec!["meta-data"], meta.into_bytes()));
            out.push((
                vec!["user-data"],
                data.user_data.clone().unwrap_or_default(),
            ));
            if let Some(n) = &data.network_data {
                out.push((vec!["network-config"], n.clone()));
            }
        }
        Flavor::ConfigDrive => {
            let meta = json!({
                "uuid": instance.uid,
                "instance_id": instance.uid,
                "hostname": instance.hostname,
                "name": instance.hostname,
            });
            out.push((
                vec!["openstack", "latest", "meta_data.json"],
                meta.to_string().into_bytes(),
            ));
            if let Some(u) = &data.user_data {
                out.push((vec!["openstack", "latest", "user_data"], u.clone()));
            }
            if let Some(n) = &data.network_data {
                out.push((vec!["openstack", "latest", "network_data.json"], n.clone()));
            }
        }
    }
    out
}

/// Writes a vfat disk image at `path` labelled for `flavor` holding the data.
pub fn write(
    path: &Path,
    flavor: Flavor,
    instance: &Instance,
    data: &Data,
) -> Result<(), CloudInitError> {
    let err = |e: std::io::Error| CloudInitError::Write(path.to_path_buf(), e);
    let files = files(flavor, instance, data);
    let payload: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
    // FAT12/16 overhead and cluster slack: generous, and whole MiBs.
    let size = (payload * 2 + (2 << 20)).div_ceil(1 << 20) * (1 << 20);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    file.set_len(size).map_err(err)?;
    let mut label = [b' '; 11];
    label[..flavor.label().len()].copy_from_slice(flavor.label().as_bytes());
    fatfs::format_volume(
        &mut file,
        fatfs::FormatVolumeOptions::new().volume_label(label),
    )
    .map_err(err)?;
    {
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).map_err(err)?;
        for (parts, content) in &files {
            let root = fs.root_dir();
            let (name, dirs) = parts.split_last().expect("every file has a name");
            let mut dir = root.clone();
            for d in dirs {
                dir = match dir.open_dir(d) {
                    Ok(x) => x,
                    Err(_) => dir.create_dir(d).map_err(err)?,
                };
            }
            let mut f = dir.create_file(name).map_err(err)?;
            f.truncate().map_err(err)?;
            f.write_all(content).map_err(err)?;
            f.flush().map_err(err)?;
        }
        fs.unmount().map_err(err)?;
    }
    file.sync_all().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read(path: &Path, parts: &[&str]) -> Vec<u8> {
        let f = std::fs::File::open(path).unwrap();
        let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
        let mut dir = fs.root_dir();
        let (name, dirs) = parts.split_last().unwrap();
        for d in dirs {
            dir = dir.open_dir(d).unwrap();
        }
        let mut out = Vec::new();
        dir.open_file(name).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn nocloud_and_configdrive_disks_hold_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let src = CloudInitSource {
            user_data_base64: Some(
                base64::engine::general_purpose::STANDARD.encode("#cloud-config\npassword: x\n"),
            ),
            network_data: Some("version: 2\n".into()),
            ..CloudInitSource::default()
        };
        let data = resolve(&src, |_| async { Ok(None) }).await.unwrap();
        assert_eq!(
            data.user_data.as_deref(),
            Some(&b"#cloud-config\npassword: x\n"[..])
        );
        let inst = Instance {
            uid: "u-1".into(),
            hostname: "vm1".into(),
        };
        let p = dir.path().join("nocloud.img");
        write(&p, Flavor::NoCloud, &inst, &data).unwrap();
        assert_eq!(read(&p, &["user-data"]), b"#cloud-config\npassword: x\n");
        assert_eq!(read(&p, &["network-config"]), b"version: 2\n");
        assert!(String::from_utf8(read(&p, &["meta-data"]))
            .unwrap()
            .contains("instance-id: u-1"));
        let q = dir.path().join("cd.img");
        write(&q, Flavor::ConfigDrive, &inst, &data).unwrap();
        let meta: Value =
            serde_json::from_slice(&read(&q, &["openstack", "latest", "meta_data.json"])).unwrap();
        assert_eq!(meta["uuid"], "u-1");
        assert_eq!(
            read(&q, &["openstack", "latest", "network_data.json"]),
            b"version: 2\n"
        );
        // The label sits in the boot sector where blkid reads it.
        let raw = std::fs::read(&q).unwrap();
        assert!(raw.windows(8).any(|w| w == b"config-2"));
    }

    #[tokio::test]
    async fn secrets_supply_the_data() {
        let src = CloudInitSource {
            secret_ref: Some(api::kubevirt::volume::LocalObjectReference { name: "s".into() }),
            ..CloudInitSource::default()
        };
        let data = resolve(&src, |n| async move {
            assert_eq!(n, "s");
            Ok(Some(json!({"data": {"userdata": "aGk="}})))
        })
        .await
        .unwrap();
        assert_eq!(data.user_data.as_deref(), Some(&b"hi"[..]));
        let missing = resolve(&src, |_| async { Ok(None) }).await.unwrap_err();
        assert!(matches!(missing, CloudInitError::SecretMissing(_)));
        let bad = CloudInitSource {
            user_data_base64: Some("!!".into()),
            ..CloudInitSource::default()
        };
        assert!(resolve(&bad, |_| async { Ok(None) }).await.is_err());
    }
}
