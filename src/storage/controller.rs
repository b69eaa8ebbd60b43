//! The storage controllers `monovirt serve` runs: the local provisioner (PVC → PV +
//! `disk.img`, protection finalizers, reclaim), the populator (imports, uploads, clones,
//! blanks into bound claims) and the DataVolume controller. They share one [`Context`]:
//! caches fed by watches (PVCs, PVs, StorageClasses, VMIs, DataVolumes) and the client
//! they write through.

use super::{class, datavolume, populator, provisioner, upload};
use crate::client::{Api, Client};
use crate::controller::reflector::{reflect, Cache, Change};
use crate::controller::runtime;
use api::cdi::datavolume::DataVolume;
use api::core::pv::PersistentVolume;
use api::core::pvc::PersistentVolumeClaim;
use api::kubevirt::virtualmachineinstance::VirtualMachineInstance;
use api::resource::ResourceDef;
use api::storage::storageclass::StorageClass;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often every object is reconciled without changes.
pub const RESYNC: Duration = Duration::from_secs(60);

/// The resource definitions the storage controllers use.
#[derive(Debug, Clone, Copy)]
pub struct Defs {
    pub pvc: &'static ResourceDef,
    pub pv: &'static ResourceDef,
    pub sc: &'static ResourceDef,
    pub vmi: &'static ResourceDef,
    pub dv: &'static ResourceDef,
    pub secret: &'static ResourceDef,
    pub configmap: &'static ResourceDef,
}

impl Defs {
    /// The definitions from the static registry.
    pub fn get() -> Self {
        let find = |group, kind| {
            api::resource::find_kind(group, kind).expect("the registry serves every storage kind")
        };
        Self {
            pvc: find("", "PersistentVolumeClaim"),
            pv: find("", "PersistentVolume"),
            sc: find("storage.k8s.io", "StorageClass"),
            vmi: find("kubevirt.io", "VirtualMachineInstance"),
            dv: find("cdi.kubevirt.io", "DataVolume"),
            secret: find("", "Secret"),
            configmap: find("", "ConfigMap"),
        }
    }
}

/// What the storage controllers read and write.
#[derive(Debug)]
pub struct Context {
    pub client: Client,
    /// `serve`'s data directory (the default class lives under it).
    pub data_dir: PathBuf,
    pub defs: Defs,
    pub pvcs: Cache<PersistentVolumeClaim>,
    pub pvs: Cache<PersistentVolume>,
    pub classes: Cache<StorageClass>,
    pub vmis: Cache<VirtualMachineInstance>,
    pub dvs: Cache<DataVolume>,
    /// The running populations (imports, clones, uploads).
    pub populator: populator::Populator,
    /// Upload tokens and waiting uploads.
    pub uploads: upload::Uploads,
}

impl Context {
    /// A context over `client` with empty caches.
    pub fn new(client: Client, data_dir: PathBuf, uploads: upload::Uploads) -> Self {
        Self {
            client,
            data_dir,
            defs: Defs::get(),
            pvcs: Cache::default(),
            pvs: Cache::default(),
            classes: Cache::default(),
            vmis: Cache::default(),
            dvs: Cache::default(),
            populator: populator::Populator::default(),
            uploads,
        }
    }

    /// A namespaced API of `def`.
    pub fn api(&self, def: &'static ResourceDef, ns: &str) -> Api<serde_json::Value> {
        Api::namespaced(self.client.clone(), def, ns)
    }
}

fn ns_key(ns: Option<&str>, name: Option<&str>) -> String {
    format!("{}/{}", ns.unwrap_or_default(), name.unwrap_or_default())
}

/// The claims a VMI's volumes use (`namespace/name` keys): persistentVolumeClaim,
/// dataVolume (its claim has its name) and ephemeral volumes.
pub fn claims_of(vmi: &VirtualMachineInstance) -> Vec<String> {
    let ns = vmi.metadata.namespace.as_deref();
    vmi.spec
        .volumes
        .iter()
        .filter_map(|v| {
            if let Some(p) = &v.persistent_volume_claim {
                Some(p.claim_name.clone())
            } else if let Some(d) = &v.data_volume {
                Some(d.name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .and_then(|e| {
                        e.0.get("persistentVolumeClaim")
                            .and_then(|p| p.get("claimName"))
                    })
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
            }
        })
        .map(|c| ns_key(ns, Some(&c)))
        .collect()
}

/// Runs the storage controllers until `shutdown`: creates the default StorageClass, then
/// reflects the caches and runs the PVC, PV and DataVolume reconcilers.
pub async fn run(
    client: Client,
    data_dir: PathBuf,
    uploads: upload::Uploads,
    shutdown: CancellationToken,
) {
    if let Err(e) = std::fs::create_dir_all(class::default_dir(&data_dir)) {
        tracing::error!(dir = %class::default_dir(&data_dir).display(), "cannot create the storage directory: {e}");
    }
    // The API is in-process or reachable; retry until the default class exists.
    while let Err(e) = class::ensure_default(&client, &data_dir).await {
        tracing::warn!("creating the default StorageClass failed: {e}");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let ctx = Arc::new(Context::new(client.clone(), data_dir, uploads));
    let d = ctx.defs;
    let (pvc_tx, mut pvc_rx) = mpsc::unbounded_channel::<Change<PersistentVolumeClaim>>();
    let (pv_tx, mut pv_rx) = mpsc::unbounded_channel::<Change<PersistentVolume>>();
    let (sc_tx, mut sc_rx) = mpsc::unbounded_channel::<Change<StorageClass>>();
    let (vmi_tx, mut vmi_rx) = mpsc::unbounded_channel::<Change<VirtualMachineInstance>>();
    let (dv_tx, mut dv_rx) = mpsc::unbounded_channel::<Change<DataVolume>>();
    let all = |def| Api::all(client.clone(), def);
    tokio::spawn(reflect(
        all(d.pvc),
        ctx.pvcs.clone(),
        pvc_tx,
        shutdown.clone(),
    ));
    tokio::spawn(reflect(all(d.pv), ctx.pvs.clone(), pv_tx, shutdown.clone()));
    tokio::spawn(reflect(
        all(d.sc),
        ctx.classes.clone(),
        sc_tx,
        shutdown.clone(),
    ));
    tokio::spawn(reflect(
        all(d.vmi),
        ctx.vmis.clone(),
        vmi_tx,
        shutdown.clone(),
    ));
    tokio::spawn(reflect(all(d.dv), ctx.dvs.clone(), dv_tx, shutdown.clone()));

    let (pvc_keys, pvc_keys_rx) = mpsc::unbounded_channel::<String>();
    let (pv_keys, pv_keys_rx) = mpsc::unbounded_channel::<String>();
    let (dv_keys, dv_keys_rx) = mpsc::unbounded_channel::<String>();
    let forward = shutdown.clone();
    let fctx = ctx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = forward.cancelled() => return,
                Some(c) = pvc_rx.recv() => {
                    let _ = pvc_keys.send(c.key.clone());
                    if let Some(dv) = datavolume::owner_of(&c.object) {
                        let _ = dv_keys.send(dv);
                    }
                    if c.deleted {
                        for pv in provisioner::volumes_of_claim(&fctx, &c.object) {
                            let _ = pv_keys.send(pv);
                        }
                    }
                }
                Some(c) = pv_rx.recv() => {
                    let _ = pv_keys.send(c.key.clone());
                    if let Some(claim) = provisioner::claim_key(&c.object) {
                        let _ = pvc_keys.send(claim);
                    }
                }
                Some(_) = sc_rx.recv() => {
                    for pvc in fctx.pvcs.list() {
                        let _ = pvc_keys.send(ns_key(pvc.metadata.namespace.as_deref(), pvc.metadata.name.as_deref()));
                    }
                }
                Some(c) = vmi_rx.recv() => {
                    for claim in claims_of(&c.object) {
                        let _ = pvc_keys.send(claim);
                    }
                }
                Some(c) = dv_rx.recv() => {
                    let _ = dv_keys.send(c.key.clone());
                }
                else => return,
            }
        }
    });
    let keys_of = |list: Vec<String>| list;
    tokio::join!(
        runtime::run(
            ctx.clone(),
            pvc_keys_rx,
            |c: &Context| keys_of(
                c.pvcs
                    .list()
                    .iter()
                    .map(|p| ns_key(p.metadata.namespace.as_deref(), p.metadata.name.as_deref()))
                    .collect()
            ),
            provisioner::reconcile_claim,
            RESYNC,
            shutdown.clone(),
        ),
        runtime::run(
            ctx.clone(),
            pv_keys_rx,
            |c: &Context| c
                .pvs
                .list()
                .iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default())
                .collect(),
            provisioner::reconcile_volume,
            RESYNC,
            shutdown.clone(),
        ),
        runtime::run(
            ctx.clone(),
            dv_keys_rx,
            |c: &Context| c
                .dvs
                .list()
                .iter()
                .map(|d| ns_key(d.metadata.namespace.as_deref(), d.metadata.name.as_deref()))
                .collect(),
            datavolume::reconcile,
            RESYNC,
            shutdown.clone(),
        ),
    );
    ctx.populator.cancel_all();
}
