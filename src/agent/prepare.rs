//! The one seam between a VMI and the VMM: [`prepare`] turns what the VMI asks for
//! (volumes, network interfaces, kernel boot) into what a [`VmConfig`] is made of (disk
//! and NIC configs, kernel and initrd paths, command line) and [`release`] undoes it when
//! the VM is gone. Everything node-local a VM needs (its ephemeral disks) lives in its own
//! directory `<data-dir>/run/vmis/<uid>/`, removed on release.
//!
//! Handled here: `containerDisk` (from the image store, copied to an ephemeral disk as
//! KubeVirt's container disks are ephemeral), `emptyDisk` (a sparse file) and
//! `firmware.kernelBoot` (kernel and initrd from an image). Other volume kinds and pod
//! network bindings are provided by the storage and network modules, called from
//! [`disk_for`] and [`interfaces`].

use crate::image::{ImageError, ImageStore};
use crate::network::node::{NetworkError, NodeNetwork};
use crate::vmm::device_config::{DiskConfig, NicConfig};
use api::kubevirt::devices::Disk;
use api::kubevirt::virtualmachineinstance::{InterfaceStatus, VirtualMachineInstance};
use api::kubevirt::volume::Volume;
use api::network::attachment::NetworkAttachmentDefinition;
use api::quantity;
use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The qcow2 magic: container disks must be raw images for now.
const QCOW2_MAGIC: &[u8] = b"QFI\xfb";

/// Why a VMI cannot be prepared on this node.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("spec.domain.firmware.kernelBoot with a container image is required: this node boots guests by direct kernel boot only")]
    NoKernelBoot,
    #[error("kernelBoot.container.kernelPath is required")]
    NoKernelPath,
    #[error("Disk {0:?} names no volume of that name")]
    NoVolume(String),
    #[error("Volume {volume:?}: {kind} volumes are not supported on this node")]
    Unsupported { volume: String, kind: &'static str },
    #[error("Volume {0:?}: the container disk is a qcow2 image; import a raw disk image")]
    Qcow2(String),
    #[error("Volume {0:?}: invalid capacity {1:?}")]
    Capacity(String, String),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("Network interfaces")]
    Network(#[from] NetworkError),
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> PrepareError {
    let what = what.into();
    move |e| PrepareError::Io(what, e)
}

/// What node-local state a VMI's VM is built from.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// virtio-blk disks in the order of `spec.domain.devices.disks`.
    pub disks: Vec<DiskConfig>,
    /// virtio-net NICs.
    pub nics: Vec<NicConfig>,
    /// `status.interfaces` for the NICs.
    pub interfaces: Vec<InterfaceStatus>,
    /// Things the VM runs without that the user should know about (recorded as Events).
    pub warnings: Vec<String>,
    /// The VMI's own directory (ephemeral disks).
    pub dir: PathBuf,
}

/// What [`prepare`] needs from the node.
#[derive(Debug, Clone)]
pub struct Node {
    /// The image store.
    pub images: ImageStore,
    /// `<data-dir>/run/vmis`.
    pub run_dir: PathBuf,
    /// VMI networking (`--network`); without it interfaces stay unconnected.
    pub network: Option<Arc<NodeNetwork>>,
    /// Storage volumes (PVCs, DataVolumes, hostDisk, ephemeral, cloud-init); without it
    /// those volumes are unsupported.
    pub volumes: Option<crate::storage::volume::Volumes>,
}

/// The NetworkAttachmentDefinitions a VMI refers to, by (namespace, name).
pub type Nads = BTreeMap<(String, String), NetworkAttachmentDefinition>;

/// Runs a future of the network module from synchronous agent code (a blocking-pool
/// thread, or a worker of the multi-threaded runtime, which steps aside meanwhile).
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

impl Node {
    /// The directory of the VMI with `uid`.
    pub fn vmi_dir(&self, uid: &str) -> PathBuf {
        self.run_dir.join(uid)
    }
}

fn kind_of(v: &Volume) -> &'static str {
    if v.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if v.data_volume.is_some() {
        "dataVolume"
    } else if v.host_disk.is_some() {
        "hostDisk"
    } else if v.ephemeral.is_some() {
        "ephemeral"
    } else if v.cloud_init_no_cloud.is_some() {
        "cloudInitNoCloud"
    } else if v.cloud_init_config_drive.is_some() {
        "cloudInitConfigDrive"
    } else if v.config_map.is_some() {
        "configMap"
    } else if v.secret.is_some() {
        "secret"
    } else if v.service_account.is_some() {
        "serviceAccount"
    } else if v.downward_api.is_some() {
        "downwardAPI"
    } else {
        "unknown"
    }
}

/// Copies the container disk `src` to `dst`: the VM writes to its own copy, which is
/// dropped with the VMI (on reflink-capable filesystems the copy shares blocks).
fn ephemeral_copy(volume: &str, src: &Path, dst: &Path) -> Result<(), PrepareError> {
    let mut head = [0u8; 4];
    let n = fs::File::open(src)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io_err(src.display().to_string()))?;
    if n == 4 && head == QCOW2_MAGIC {
        return Err(PrepareError::Qcow2(volume.to_string()));
    }
    fs::copy(src, dst).map_err(io_err(dst.display().to_string()))?;
    Ok(())
}

/// The disk config for `disk` backed by `volume`.
fn disk_for(
    node: &Node,
    dir: &Path,
    disk: &Disk,
    volume: &Volume,
) -> Result<DiskConfig, PrepareError> {
    let read_only = disk
        .disk
        .as_ref()
        .and_then(|d| d.readonly)
        .or_else(|| disk.lun.as_ref().and_then(|d| d.readonly))
        .unwrap_or(false)
        || disk.cdrom.is_some();
    let file = dir.join(format!("disk-{}.img", volume.name));
    if let Some(cd) = &volume.container_disk {
        let image = node.images.get(&cd.image)?;
        let src = image.container_disk(cd.path.as_deref())?;
        ephemeral_copy(&volume.name, &src, &file)?;
    } else if let Some(empty) = &volume.empty_disk {
        let bytes = quantity::parse(&empty.capacity.0)
            .ok()
            .map(|q| q.value())
            .and_then(|b| u64::try_from(b).ok())
            .filter(|b| *b > 0)
            .ok_or_else(|| PrepareError::Capacity(volume.name.clone(), empty.capacity.0.clone()))?;
        let f = fs::File::create(&file).map_err(io_err(file.display().to_string()))?;
        f.set_len(bytes)
            .map_err(io_err(file.display().to_string()))?;
    } else {
        return Err(PrepareError::Unsupported {
            volume: volume.name.clone(),
            kind: kind_of(volume),
        });
    }
    Ok(DiskConfig {
        path: file,
        read_only,
        serial: disk.serial.clone(),
        cache: None,
    })
}

/// NICs for the VMI's interfaces, plumbed by the node's network (taps, macvtaps, DHCP,
/// NAT). A node without `--network` leaves each interface unconnected and names it in
/// the warnings (the guest boots without it).
fn interfaces(
    node: &Node,
    vmi: &VirtualMachineInstance,
    nads: &Nads,
    prepared: &mut Prepared,
) -> Result<(), PrepareError> {
    if let Some(network) = &node.network {
        if !vmi.spec.domain.devices.interfaces.is_empty() {
            let net = block_on(network.prepare(vmi, nads))?;
            prepared.nics = net.nics;
            prepared.interfaces = net.interfaces;
        }
        return Ok(());
    }
    for iface in &vmi.spec.domain.devices.interfaces {
        prepared.warnings.push(format!(
            "Interface {:?} is not connected: this node has no network binding for it yet",
            iface.name
        ));
    }
    Ok(())
}

/// Prepares everything node-local the VM of `vmi` needs (no multus networks).
pub fn prepare(node: &Node, vmi: &VirtualMachineInstance) -> Result<Prepared, PrepareError> {
    prepare_with_networks(node, vmi, &Nads::new())
}

/// Prepares everything node-local the VM of `vmi` needs, with the
/// NetworkAttachmentDefinitions its multus networks refer to.
pub fn prepare_with_networks(
    node: &Node,
    vmi: &VirtualMachineInstance,
    nads: &Nads,
) -> Result<Prepared, PrepareError> {
    prepare_with_volumes(node, vmi, nads, &[])
}

/// [`prepare_with_networks`] with the disks the storage module prepared
/// ([`crate::storage::volume::Volumes::prepare`]) for the VMI's storage volumes.
pub fn prepare_with_volumes(
    node: &Node,
    vmi: &VirtualMachineInstance,
    nads: &Nads,
    storage: &[crate::storage::volume::PreparedDisk],
) -> Result<Prepared, PrepareError> {
    let uid = vmi.metadata.uid.clone().unwrap_or_default();
    let dir = node.vmi_dir(&uid);
    fs::create_dir_all(&dir).map_err(io_err(dir.display().to_string()))?;
    let result = prepare_in(node, vmi, nads, storage, dir.clone());
    if result.is_err() {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

fn prepare_in(
    node: &Node,
    vmi: &VirtualMachineInstance,
    nads: &Nads,
    storage: &[crate::storage::volume::PreparedDisk],
    dir: PathBuf,
) -> Result<Prepared, PrepareError> {
    let boot = vmi
        .spec
        .domain
        .firmware
        .as_ref()
        .and_then(|f| f.kernel_boot.as_ref())
        .ok_or(PrepareError::NoKernelBoot)?;
    let container = boot.container.as_ref().ok_or(PrepareError::NoKernelBoot)?;
    let image = node.images.get(&container.image)?;
    let kernel_path = container
        .kernel_path
        .as_deref()
        .filter(|p| !p.is_empty())
        .ok_or(PrepareError::NoKernelPath)?;
    let mut prepared = Prepared {
        kernel: image.file(kernel_path)?,
        initrd: match container.initrd_path.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Some(image.file(p)?),
            None => None,
        },
        cmdline: boot.kernel_args.clone().unwrap_or_default(),
        dir: dir.clone(),
        ..Prepared::default()
    };
    for disk in &vmi.spec.domain.devices.disks {
        let mut config = match storage.iter().find(|d| d.name == disk.name) {
            Some(d) => d.to_config(),
            None => {
                let volume = vmi
                    .spec
                    .volumes
                    .iter()
                    .find(|v| v.name == disk.name)
                    .ok_or_else(|| PrepareError::NoVolume(disk.name.clone()))?;
                disk_for(node, &dir, disk, volume)?
            }
        };
        // KubeVirt's disk `cache` (validated by the API); unset: the VMM's default.
        config.cache = disk.cache.as_deref().and_then(|c| c.parse().ok());
        prepared.disks.push(config);
    }
    interfaces(node, vmi, nads, &mut prepared)?;
    Ok(prepared)
}

/// Releases what [`prepare`] set up for the VMI with `uid` (also after an agent restart,
/// when only the directory is left).
pub fn release(node: &Node, uid: &str) -> Result<(), PrepareError> {
    if let Some(volumes) = &node.volumes {
        volumes.release(uid);
    }
    if let Some(network) = &node.network {
        block_on(network.release(uid))?;
    }
    let dir = node.vmi_dir(uid);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PrepareError::Io(dir.display().to_string(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vmi(spec: serde_json::Value) -> VirtualMachineInstance {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v", "namespace": "default", "uid": "u-1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn node() -> (tempfile::TempDir, Node) {
        let dir = tempfile::tempdir().unwrap();
        let node = Node {
            volumes: None,
            images: ImageStore::open(dir.path()).unwrap(),
            run_dir: dir.path().join("run/vmis"),
            network: None,
        };
        (dir, node)
    }

    #[test]
    fn kernel_boot_container_disk_and_empty_disk() {
        let (dir, node) = node();
        let k = dir.path().join("vmlinux");
        fs::write(&k, b"kernel").unwrap();
        node.images
            .import("guest-kernel:1", &k, Some("/boot/vmlinux"))
            .unwrap();
        let d = dir.path().join("root.img");
        fs::write(&d, vec![7u8; 4096]).unwrap();
        node.images.import("rootdisk", &d, None).unwrap();
        let v = vmi(json!({
            "domain": {
                "firmware": {"kernelBoot": {"kernelArgs": "console=ttyS0 wait",
                    "container": {"image": "guest-kernel:1", "kernelPath": "/boot/vmlinux"}}},
                "devices": {"disks": [
                    {"name": "root", "serial": "r1", "disk": {"bus": "virtio"}},
                    {"name": "scratch", "disk": {"bus": "virtio"}},
                    {"name": "cd", "cdrom": {"bus": "sata"}}],
                    "interfaces": [{"name": "default", "masquerade": {}}]}},
            "volumes": [
                {"name": "root", "containerDisk": {"image": "rootdisk"}},
                {"name": "scratch", "emptyDisk": {"capacity": "1Mi"}},
                {"name": "cd", "containerDisk": {"image": "rootdisk"}}],
        }));
        let p = prepare(&node, &v).unwrap();
        assert_eq!(fs::read(&p.kernel).unwrap(), b"kernel");
        assert_eq!(p.cmdline, "console=ttyS0 wait");
        assert_eq!(p.disks.len(), 3);
        assert_eq!(p.disks[0].serial.as_deref(), Some("r1"));
        assert!(!p.disks[0].read_only && p.disks[2].read_only);
        assert_eq!(fs::read(&p.disks[0].path).unwrap(), vec![7u8; 4096]);
        assert_eq!(fs::metadata(&p.disks[1].path).unwrap().len(), 1 << 20);
        assert!(p.disks[0].path.starts_with(node.vmi_dir("u-1")));
        assert_eq!(p.warnings.len(), 1);
        release(&node, "u-1").unwrap();
        assert!(!node.vmi_dir("u-1").exists());
        release(&node, "u-1").unwrap();
    }

    #[test]
    fn failures_name_the_problem_and_leave_nothing() {
        let (dir, node) = node();
        assert!(matches!(
            prepare(&node, &vmi(json!({"domain": {"devices": {}}}))),
            Err(PrepareError::NoKernelBoot)
        ));
        let k = dir.path().join("vmlinux");
        fs::write(&k, b"kernel").unwrap();
        node.images.import("k", &k, Some("/vmlinux")).unwrap();
        let q = dir.path().join("q.qcow2");
        fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        node.images.import("q", &q, None).unwrap();
        let boot = json!({"kernelBoot": {"container": {"image": "k", "kernelPath": "/vmlinux"}}});
        let with = |volume: serde_json::Value| {
            vmi(
                json!({"domain": {"firmware": boot, "devices": {"disks": [{"name": "d"}]}},
                "volumes": [volume]}),
            )
        };
        let err = |v| prepare(&node, &v).unwrap_err();
        assert!(matches!(
            err(with(
                json!({"name": "d", "persistentVolumeClaim": {"claimName": "c"}})
            )),
            PrepareError::Unsupported {
                kind: "persistentVolumeClaim",
                ..
            }
        ));
        assert!(matches!(
            err(with(json!({"name": "d", "containerDisk": {"image": "q"}}))),
            PrepareError::Qcow2(_)
        ));
        assert!(matches!(
            err(with(
                json!({"name": "d", "containerDisk": {"image": "missing"}})
            )),
            PrepareError::Image(ImageError::NotFound(_))
        ));
        assert!(matches!(
            err(with(
                json!({"name": "other", "emptyDisk": {"capacity": "1Mi"}})
            )),
            PrepareError::NoVolume(_)
        ));
        assert!(!node.vmi_dir("u-1").exists());
    }
}
