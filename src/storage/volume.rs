//! Volume preparation for the node agent (virt-handler's and virt-launcher's disk roles):
//! [`Volumes::prepare`] turns a VMI's disks backed by storage volumes into host files the
//! VMM attaches as virtio-blk, and [`Volumes::release`] undoes it when the VMI ends.
//!
//! - `persistentVolumeClaim` / `dataVolume`: the bound claim's `disk.img`, only once its
//!   population succeeded (a half-imported disk is never attached). Access modes hold on
//!   this node: ReadWriteOnce and ReadWriteOncePod claims serve one VMI at a time (and not
//!   one running on another node), ReadOnlyMany attaches read-only, ReadWriteMany shares.
//! - `hostDisk`: `Disk` needs the file; `DiskOrCreate` creates a sparse one of `capacity`.
//! - `ephemeral`: a private copy of the claim's image, discarded with the VMI. The copy is
//!   sparse and made with `copy_file_range`, which shares extents instead of copying on
//!   filesystems that can (XFS, btrfs reflinks); the VMM's virtio-blk serves raw files
//!   only, so a qcow2 overlay is not an option.
//! - `cloudInitNoCloud` / `cloudInitConfigDrive`: a read-only vfat data disk
//!   ([`super::cloudinit`]).
//!
//! Disk options: bus `virtio` (the only bus the VMM has; a CD-ROM becomes a read-only
//! virtio disk), `serial`, `bootOrder`, `readonly`, `shareable`. Other sources
//! (containerDisk, emptyDisk, kernel boot) are the agent's own; [`Volumes::prepare_disk`]
//! answers `None` for them.

use super::cloudinit::{self, Flavor, Instance};
use super::controller::Defs;
use super::import::DISK_IMG;
use super::{populator, provisioner, sparse};
use crate::client::{Api, Client, ClientError};
use api::core::pv::PersistentVolume;
use api::core::pvc::PersistentVolumeClaim;
use api::kubevirt::devices::Disk;
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use api::kubevirt::volume::Volume;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Errors preparing a VMI's volumes.
#[allow(clippy::result_large_err)]
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("Disk {0} has no volume of the same name")]
    NoVolume(String),
    #[error("{0} {1} not found")]
    NotFound(&'static str, String),
    /// Waiting is the answer: the claim is not bound or its population runs.
    #[error("Volume {volume}: {reason}")]
    NotReady { volume: String, reason: String },
    #[error("Volume {volume}: claim {claim} is ReadWriteOnce and in use by VMI {user}")]
    InUse {
        volume: String,
        claim: String,
        user: String,
    },
    #[error("Volume {0}: {1}")]
    Unsupported(String, String),
    #[error("Volume {0}: {1} failed")]
    Io(String, String, #[source] std::io::Error),
    #[error("Volume {0}: rendering cloud-init data failed")]
    CloudInit(String, #[source] cloudinit::CloudInitError),
    #[error("Reading {0} failed")]
    Client(&'static str, #[source] ClientError),
}

impl VolumeError {
    /// Whether the VMI may start later without any change (wait and retry).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::NotReady { .. } | Self::InUse { .. } | Self::Client(..)
        )
    }
}

/// A prepared disk: what the VMM needs to attach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDisk {
    /// The disk's (and volume's) name.
    pub name: String,
    pub path: PathBuf,
    pub read_only: bool,
    /// KubeVirt's `serial` (at most 20 bytes reach the guest).
    pub serial: Option<String>,
    pub boot_order: Option<u32>,
    /// The disk may be attached to several VMIs at once.
    pub shareable: bool,
}

impl PreparedDisk {
    /// The VMM's disk configuration.
    pub fn to_config(&self) -> crate::vmm::device_config::DiskConfig {
        crate::vmm::device_config::DiskConfig {
            path: self.path.clone(),
            read_only: self.read_only,
            serial: self.serial.clone(),
            cache: None,
        }
    }
}

#[derive(Debug, Default)]
struct ClaimUse {
    exclusive: bool,
    users: BTreeSet<String>,
}

/// The volume preparer of one node agent. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Volumes {
    client: Client,
    /// Per-VMI files live under `<dir>/<vmi uid>/`.
    dir: PathBuf,
    node: Option<String>,
    defs: Defs,
    /// Claims (PV names) attached on this node, by VMI uid.
    claims: Arc<Mutex<BTreeMap<String, ClaimUse>>>,
}

fn vmi_uid(vmi: &VirtualMachineInstance) -> String {
    vmi.metadata.uid.clone().unwrap_or_default()
}

fn holds(vmi: &VirtualMachineInstance) -> bool {
    !vmi.status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_final())
}

impl Volumes {
    /// A preparer writing per-VMI files under `<data_dir>/volumes`, for the agent of
    /// `node` (used to tell VMIs on other nodes apart).
    pub fn new(client: Client, data_dir: &Path, node: Option<String>) -> Self {
        Self {
            client,
            dir: data_dir.join("volumes"),
            node,
            defs: Defs::get(),
            claims: Arc::default(),
        }
    }

    fn vmi_dir(&self, vmi: &VirtualMachineInstance) -> PathBuf {
        self.dir.join(vmi_uid(vmi))
    }

    /// Prepares every disk of `vmi` backed by a storage volume, in disk order; disks of
    /// other sources are left out (the agent prepares them). On failure, what was prepared
    /// is released.
    pub async fn prepare(
        &self,
        vmi: &VirtualMachineInstance,
    ) -> Result<Vec<PreparedDisk>, VolumeError> {
        let mut out = Vec::new();
        for disk in &vmi.spec.domain.devices.disks {
            match self.prepare_disk(vmi, disk).await {
                Ok(Some(d)) => out.push(d),
                Ok(None) => {}
                Err(e) => {
                    self.release(&vmi_uid(vmi));
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Prepares one disk, or answers `None` when its volume is not a storage volume.
    pub async fn prepare_disk(
        &self,
        vmi: &VirtualMachineInstance,
        disk: &Disk,
    ) -> Result<Option<PreparedDisk>, VolumeError> {
        let volume = vmi
            .spec
            .volumes
            .iter()
            .find(|v| v.name == disk.name)
            .ok_or_else(|| VolumeError::NoVolume(disk.name.clone()))?;
        let handled = volume.persistent_volume_claim.is_some()
            || volume.data_volume.is_some()
            || volume.host_disk.is_some()
            || volume.ephemeral.is_some()
            || volume.cloud_init_no_cloud.is_some()
            || volume.cloud_init_config_drive.is_some();
        if !handled {
            return Ok(None);
        }
        if disk.lun.is_some() {
            return Err(VolumeError::Unsupported(
                disk.name.clone(),
                "lun disks are not supported (no SCSI bus)".into(),
            ));
        }
        if let Some(bus) = disk.disk.as_ref().and_then(|d| d.bus.as_deref()) {
            if bus != "virtio" {
                return Err(VolumeError::Unsupported(
                    disk.name.clone(),
                    format!("bus {bus} is not supported: disks attach as virtio-blk"),
                ));
            }
        }
        let mut read_only =
            disk.disk.as_ref().and_then(|d| d.readonly).unwrap_or(false) || disk.cdrom.is_some();
        let (path, forced_ro) = self.volume_path(vmi, volume, read_only).await?;
        read_only |= forced_ro;
        Ok(Some(PreparedDisk {
            name: disk.name.clone(),
            path,
            read_only,
            serial: disk.serial.clone(),
            boot_order: disk.boot_order,
            shareable: disk.shareable.unwrap_or(false),
        }))
    }

    /// The host file of a storage volume and whether it must be read-only.
    async fn volume_path(
        &self,
        vmi: &VirtualMachineInstance,
        volume: &Volume,
        read_only: bool,
    ) -> Result<(PathBuf, bool), VolumeError> {
        let name = &volume.name;
        let io = |what: &str, e| VolumeError::Io(name.clone(), what.to_string(), e);
        if let Some(p) = &volume.persistent_volume_claim {
            let ro = read_only || p.read_only.unwrap_or(false);
            return self.claim(vmi, name, &p.claim_name, ro).await;
        }
        if let Some(d) = &volume.data_volume {
            return self.claim(vmi, name, &d.name, read_only).await;
        }
        if let Some(h) = &volume.host_disk {
            let path = PathBuf::from(&h.path);
            match h.type_.as_str() {
                "Disk" => {
                    if !path.is_file() {
                        return Err(VolumeError::NotFound("hostDisk", h.path.clone()));
                    }
                }
                "DiskOrCreate" => {
                    if !path.exists() {
                        let size = h
                            .capacity
                            .as_ref()
                            .and_then(|q| api::quantity::parse(&q.0).ok())
                            .and_then(|q| u64::try_from(q.value()).ok())
                            .ok_or_else(|| {
                                VolumeError::Unsupported(
                                    name.clone(),
                                    "hostDisk DiskOrCreate needs a capacity".into(),
                                )
                            })?;
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent)
                                .map_err(|e| io("creating the hostDisk directory", e))?;
                        }
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(&path)
                            .map_err(|e| io("creating the hostDisk", e))?;
                        f.set_len(size.div_ceil(512) * 512)
                            .map_err(|e| io("sizing the hostDisk", e))?;
                    }
                }
                other => {
                    return Err(VolumeError::Unsupported(
                        name.clone(),
                        format!("hostDisk type {other:?}: want Disk or DiskOrCreate"),
                    ))
                }
            }
            return Ok((path, false));
        }
        if let Some(e) = &volume.ephemeral {
            let claim =
                e.0.get("persistentVolumeClaim")
                    .and_then(|p| p.get("claimName"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        VolumeError::Unsupported(
                            name.clone(),
                            "ephemeral needs persistentVolumeClaim.claimName".into(),
                        )
                    })?;
            // The base is only read: a shared, read-only use of the claim.
            let (base, _) = self.claim(vmi, name, claim, true).await?;
            let dir = self.vmi_dir(vmi);
            std::fs::create_dir_all(&dir)
                .map_err(|e| io("creating the VMI's volume directory", e))?;
            let copy = dir.join(format!("{name}.ephemeral.img"));
            if !copy.exists() {
                let tmp = dir.join(format!("{name}.ephemeral.part"));
                let _ = std::fs::remove_file(&tmp);
                let (b, t) = (base.clone(), tmp.clone());
                tokio::task::spawn_blocking(move || sparse::copy(&b, &t))
                    .await
                    .map_err(|e| io("copying the ephemeral base", std::io::Error::other(e)))?
                    .map_err(|e| io("copying the ephemeral base", e))?;
                std::fs::rename(&tmp, &copy).map_err(|e| io("placing the ephemeral copy", e))?;
            }
            return Ok((copy, false));
        }
        let (src, flavor) = match (&volume.cloud_init_no_cloud, &volume.cloud_init_config_drive) {
            (Some(s), _) => (s, Flavor::NoCloud),
            (None, Some(s)) => (s, Flavor::ConfigDrive),
            (None, None) => unreachable!("prepare_disk only passes storage volumes"),
        };
        let ns = vmi.metadata.namespace.clone().unwrap_or_default();
        let secrets: Api<Value> = Api::namespaced(self.client.clone(), self.defs.secret, &ns);
        let data = cloudinit::resolve(src, |n: String| {
            let secrets = secrets.clone();
            async move { secrets.get_opt(&n).await.map_err(|e| e.to_string()) }
        })
        .await
        .map_err(|e| VolumeError::CloudInit(name.clone(), e))?;
        let instance = Instance {
            uid: vmi_uid(vmi),
            hostname: vmi
                .spec
                .hostname
                .clone()
                .or_else(|| vmi.metadata.name.clone())
                .unwrap_or_default(),
        };
        let dir = self.vmi_dir(vmi);
        std::fs::create_dir_all(&dir).map_err(|e| io("creating the VMI's volume directory", e))?;
        let path = dir.join(format!("{name}.{}.img", flavor.label()));
        let p = path.clone();
        tokio::task::spawn_blocking(move || cloudinit::write(&p, flavor, &instance, &data))
            .await
            .map_err(|e| io("writing the cloud-init disk", std::io::Error::other(e)))?
            .map_err(|e| VolumeError::CloudInit(name.clone(), e))?;
        Ok((path, true))
    }

    /// The `disk.img` of claim `claim` for volume `volume`, checked and locked for `vmi`.
    async fn claim(
        &self,
        vmi: &VirtualMachineInstance,
        volume: &str,
        claim: &str,
        read_only: bool,
    ) -> Result<(PathBuf, bool), VolumeError> {
        let ns = vmi.metadata.namespace.clone().unwrap_or_default();
        let pvcs: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), self.defs.pvc, &ns);
        let pvc = pvcs
            .get_opt(claim)
            .await
            .map_err(|e| VolumeError::Client("the PVC", e))?
            .ok_or_else(|| VolumeError::NotReady {
                volume: volume.to_string(),
                reason: format!("PVC {ns}/{claim} does not exist (yet)"),
            })?;
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(VolumeError::Unsupported(
                volume.to_string(),
                format!("PVC {ns}/{claim} is being deleted"),
            ));
        }
        let not_ready = |reason: String| VolumeError::NotReady {
            volume: volume.to_string(),
            reason,
        };
        let pv_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| not_ready(format!("PVC {ns}/{claim} is not bound yet")))?;
        if !populator::is_populated(&pvc) {
            let phase = pvc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(super::annotation::POD_PHASE))
                .cloned()
                .unwrap_or_else(|| "Pending".into());
            if phase == "Failed" {
                return Err(VolumeError::Unsupported(
                    volume.to_string(),
                    format!("populating PVC {ns}/{claim} failed; it will not be attached"),
                ));
            }
            return Err(not_ready(format!(
                "PVC {ns}/{claim} is being populated ({phase})"
            )));
        }
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone(), self.defs.pv);
        let pv = pvs
            .get_opt(&pv_name)
            .await
            .map_err(|e| VolumeError::Client("the PV", e))?
            .ok_or_else(|| VolumeError::NotFound("PersistentVolume", pv_name.clone()))?;
        let dir = provisioner::volume_dir(&pv).ok_or_else(|| {
            VolumeError::Unsupported(
                volume.to_string(),
                format!("PV {pv_name} is not a local volume"),
            )
        })?;
        let path = dir.join(DISK_IMG);
        if !path.is_file() {
            return Err(VolumeError::NotFound(
                "disk image",
                path.display().to_string(),
            ));
        }
        let modes: Vec<String> = pvc
            .status
            .as_ref()
            .and_then(|s| s.access_modes.clone())
            .or_else(|| pvc.spec.as_ref().and_then(|s| s.access_modes.clone()))
            .unwrap_or_default();
        let has = |m: &str| modes.iter().any(|x| x == m);
        let forced_ro = !has("ReadWriteOnce")
            && !has("ReadWriteMany")
            && !has("ReadWriteOncePod")
            && has("ReadOnlyMany");
        let exclusive = !(read_only || forced_ro || has("ReadWriteMany"));
        let uid = vmi_uid(vmi);
        if exclusive {
            self.check_other_nodes(vmi, &ns, claim, volume).await?;
        }
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let entry = claims.entry(pv_name.clone()).or_default();
        let others: Vec<&String> = entry.users.iter().filter(|u| **u != uid).collect();
        if let Some(user) = others.first() {
            if exclusive || entry.exclusive {
                return Err(VolumeError::InUse {
                    volume: volume.to_string(),
                    claim: format!("{ns}/{claim}"),
                    user: (*user).clone(),
                });
            }
        }
        entry.exclusive = exclusive;
        entry.users.insert(uid);
        Ok((path, forced_ro))
    }

    /// Refuses a ReadWriteOnce claim that a VMI on another node holds.
    async fn check_other_nodes(
        &self,
        vmi: &VirtualMachineInstance,
        ns: &str,
        claim: &str,
        volume: &str,
    ) -> Result<(), VolumeError> {
        let vmis: Api<VirtualMachineInstance> =
            Api::namespaced(self.client.clone(), self.defs.vmi, ns);
        let list = vmis
            .list(&crate::store::ListOptions::default())
            .await
            .map_err(|e| VolumeError::Client("VMIs", e))?;
        let key = format!("{ns}/{claim}");
        let me = vmi_uid(vmi);
        for other in list.items.iter().filter(|v| vmi_uid(v) != me && holds(v)) {
            let node = other.status.as_ref().and_then(|s| s.node_name.clone());
            let elsewhere = node.is_some() && node != self.node;
            let running = other.status.as_ref().and_then(|s| s.phase)
                == Some(
                    api::kubevirt::virtualmachineinstance::VirtualMachineInstancePhase::Running,
                );
            if elsewhere && running && super::controller::claims_of(other).contains(&key) {
                return Err(VolumeError::InUse {
                    volume: volume.to_string(),
                    claim: key,
                    user: other.metadata.name.clone().unwrap_or_default(),
                });
            }
        }
        Ok(())
    }

    /// Releases the volumes of the VMI with `uid`: its claims are free again and its per-VMI files
    /// (ephemeral copies, cloud-init disks) are removed.
    pub fn release(&self, uid: &str) {
        {
            let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
            for c in claims.values_mut() {
                c.users.remove(uid);
            }
            claims.retain(|_, c| !c.users.is_empty());
        }
        if uid.is_empty() {
            return;
        }
        let dir = self.dir.join(uid);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "removing the VMI's volume files failed: {e}")
            }
        }
    }
}
