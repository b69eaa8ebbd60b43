//! The populator (CDI's importer, cloner and upload server roles, as tasks instead of
//! pods): fills a bound claim's `disk.img` from the source its annotations name — an
//! HTTP(S) endpoint, an upload, another claim, or nothing (blank) — and reports through the
//! claim's annotations as CDI does (`storage.pod.phase`, `storage.pod.restarts`, the
//! Running condition, progress). Network failures are retried with a growing delay (each
//! retry counts as a restart); everything else fails the population for good.

use super::checksum::Checksum;
use super::controller::Context;
use super::import::{self, ImportError, Imported, Progress, Target};
use super::source::{HttpSource, SourceError};
use super::{annotation, provisioner, sparse};
use crate::client::Api;
use crate::controller::event::{EventType, Recorder};
use crate::store::{Patch, WriteOptions};
use api::core::pvc::PersistentVolumeClaim;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How many times a transfer is retried after network failures before it fails.
pub const MAX_RESTARTS: u32 = 3;
/// The delay before the first retry; it doubles per retry.
pub const RETRY_BASE: Duration = Duration::from_secs(2);
/// How often progress is written while a transfer runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Where a claim's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http {
        url: String,
        secret: Option<String>,
        cert_config_map: Option<String>,
        checksum: Option<String>,
        extra_headers: Vec<String>,
    },
    /// An empty disk.
    Blank,
    /// Bytes through the upload endpoint.
    Upload,
    /// A copy of another claim (`namespace`, `name`).
    Clone { namespace: String, name: String },
}

impl Source {
    /// The verb of the phases: Import, Upload or Clone.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Http { .. } | Self::Blank => "Import",
            Self::Upload => "Upload",
            Self::Clone { .. } => "Clone",
        }
    }
}

fn annotations(pvc: &PersistentVolumeClaim) -> BTreeMap<String, String> {
    pvc.metadata.annotations.clone().unwrap_or_default()
}

/// The population source a claim's annotations ask for, if any.
pub fn source_of(pvc: &PersistentVolumeClaim) -> Option<Source> {
    let a = annotations(pvc);
    let get = |k: &str| a.get(k).filter(|v| !v.is_empty()).cloned();
    if let Some(url) = get(annotation::ENDPOINT) {
        let extra_headers = a
            .iter()
            .filter(|(k, _)| k.starts_with(annotation::EXTRA_HEADERS))
            .map(|(_, v)| v.clone())
            .collect();
        return Some(Source::Http {
            url,
            secret: get(annotation::SECRET),
            cert_config_map: get(annotation::CERT_CONFIG_MAP),
            checksum: get(annotation::CHECKSUM),
            extra_headers,
        });
    }
    if a.contains_key(annotation::UPLOAD_REQUEST) {
        return Some(Source::Upload);
    }
    if let Some((namespace, name)) = get(annotation::CLONE_REQUEST)
        .as_deref()
        .and_then(|r| r.split_once('/'))
    {
        return Some(Source::Clone {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }
    if get(annotation::SOURCE).as_deref() == Some("none") {
        return Some(Source::Blank);
    }
    None
}

/// Whether a claim's content is complete: it has no population source, or its population
/// succeeded. A VM may attach only such a claim.
pub fn is_populated(pvc: &PersistentVolumeClaim) -> bool {
    source_of(pvc).is_none()
        || annotations(pvc)
            .get(annotation::POD_PHASE)
            .map(String::as_str)
            == Some("Succeeded")
}

/// Why one population attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum PopulateError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("{0}")]
    Setup(String),
}

impl PopulateError {
    fn retryable(&self) -> bool {
        match self {
            Self::Source(e) => e.retryable(),
            Self::Import(e) => e.retryable(),
            Self::Setup(_) => false,
        }
    }

    /// CDI's Running-condition reason for the failure.
    fn reason(&self) -> &'static str {
        match self {
            Self::Import(ImportError::Checksum { .. }) => "ChecksumMismatch",
            Self::Import(ImportError::TooLarge { .. } | ImportError::DiskFull(_)) => {
                "InsufficientStorage"
            }
            Self::Import(
                ImportError::NotAnImage(_)
                | ImportError::Damaged(..)
                | ImportError::ExternalFile(_),
            ) => "InvalidImage",
            _ => "Error",
        }
    }
}

struct Running {
    uid: String,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The running populations, by claim key.
#[derive(Default)]
pub struct Populator {
    running: Mutex<BTreeMap<String, Running>>,
}

impl std::fmt::Debug for Populator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("Populator").field("running", &keys).finish()
    }
}

impl Populator {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the population of `key` (if any) and waits until it has cleaned up.
    pub async fn cancel(&self, key: &str) {
        let Some(r) = self.lock().remove(key) else {
            return;
        };
        r.cancel.cancel();
        if let Err(e) = r.task.await {
            tracing::warn!(pvc = %key, "population task failed: {e}");
        }
    }

    /// Stops every population (shutdown); partial files are removed as each task ends.
    pub fn cancel_all(&self) {
        for (_, r) in std::mem::take(&mut *self.lock()) {
            r.cancel.cancel();
        }
    }

    fn is_running(&self, key: &str, uid: &str) -> bool {
        self.lock()
            .get(key)
            .is_some_and(|r| r.uid == uid && !r.task.is_finished())
    }
}

/// Starts the population of a bound claim unless it is done, failed or running.
pub async fn ensure(ctx: &Arc<Context>, pvc: &PersistentVolumeClaim) {
    let Some(source) = source_of(pvc) else {
        return;
    };
    let a = annotations(pvc);
    if matches!(
        a.get(annotation::POD_PHASE).map(String::as_str),
        Some("Succeeded" | "Failed")
    ) {
        return;
    }
    let ns = pvc.metadata.namespace.clone().unwrap_or_default();
    let name = pvc.metadata.name.clone().unwrap_or_default();
    let uid = pvc.metadata.uid.clone().unwrap_or_default();
    let key = format!("{ns}/{name}");
    if ctx.populator.is_running(&key, &uid) {
        return;
    }
    // A task of an earlier claim of the same name: stop it first.
    ctx.populator.cancel(&key).await;
    let Some(pv) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .and_then(|v| ctx.pvs.get(v))
    else {
        return;
    };
    let (Some(dir), Some(capacity)) = (
        provisioner::volume_dir(&pv),
        provisioner::capacity_bytes(pvc),
    ) else {
        return;
    };
    let restarts = a
        .get(annotation::POD_RESTARTS)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let cancel = CancellationToken::new();
    let job = Job {
        ctx: ctx.clone(),
        ns,
        name,
        uid: uid.clone(),
        source,
        target: Target { dir, capacity },
        restarts,
    };
    tracing::info!(pvc = %key, source = ?job.source, "population starts");
    let task = tokio::spawn(job.run(cancel.clone()));
    ctx.populator
        .lock()
        .insert(key, Running { uid, cancel, task });
}

struct Job {
    ctx: Arc<Context>,
    ns: String,
    name: String,
    uid: String,
    source: Source,
    target: Target,
    restarts: u32,
}

impl Job {
    /// Records an Event about the claim.
    async fn record(&self, type_: EventType, reason: &str, message: &str) {
        let involved = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "name": self.name, "namespace": self.ns, "uid": self.uid});
        Recorder::new(self.ctx.client.clone(), "monovirt-storage")
            .record(&involved, type_, reason, message)
            .await;
    }

    /// Merges `values` into the claim's annotations (`null` removes one).
    async fn annotate(&self, values: Map<String, Value>) {
        let api = self.ctx.api(self.ctx.defs.pvc, &self.ns);
        let patch = json!({"metadata": {"annotations": values, "uid": self.uid}});
        if let Err(e) = api
            .patch(&self.name, Patch::Merge(patch), &WriteOptions::default())
            .await
        {
            tracing::warn!(pvc = %self.name, "updating the claim's annotations failed: {e}");
        }
    }

    async fn run(mut self, cancel: CancellationToken) {
        let progress = Arc::new(Progress::default());
        loop {
            let mut running = Map::new();
            running.insert(annotation::POD_PHASE.into(), "Running".into());
            running.insert(
                annotation::POD_RESTARTS.into(),
                self.restarts.to_string().into(),
            );
            running.insert(annotation::RUNNING.into(), "true".into());
            running.insert(annotation::RUNNING_REASON.into(), "Running".into());
            running.insert(annotation::RUNNING_MESSAGE.into(), Value::Null);
            running.insert(annotation::POD_READY.into(), "true".into());
            if matches!(self.source, Source::Upload) {
                // Open for data before saying so: an uploader posts as soon as it reads
                // `pod.ready`.
                self.ctx
                    .uploads
                    .open(&self.key(), self.target.clone(), progress.clone());
            }
            self.annotate(running).await;
            progress.reset();
            let result = {
                let attempt = self.attempt(progress.clone());
                tokio::pin!(attempt);
                let mut ticker = tokio::time::interval(PROGRESS_EVERY);
                let mut last = None;
                let result = loop {
                    tokio::select! {
                        () = cancel.cancelled() => {
                            self.target.clean();
                            if matches!(self.source, Source::Upload) {
                                self.ctx.uploads.close(&self.key());
                            }
                            return;
                        }
                        r = &mut attempt => break r,
                        _ = ticker.tick() => {
                            let p = progress.percent();
                            if p.is_some() && p != last {
                                let mut m = Map::new();
                                m.insert(annotation::PROGRESS.into(), p.clone().into());
                                self.annotate(m).await;
                                last = p;
                            }
                        }
                    }
                };
                result
            };
            let mut done = Map::new();
            done.insert(annotation::RUNNING.into(), "false".into());
            done.insert(annotation::POD_READY.into(), "false".into());
            match result {
                Ok(imported) => {
                    let msg = match &imported {
                        Some(i) => format!(
                            "{} succeeded: {} image{}, {} bytes transferred, virtual size {} bytes",
                            self.source.verb(),
                            i.format,
                            i.compression
                                .map(|c| format!(" ({c:?} compressed)"))
                                .unwrap_or_default(),
                            i.transferred,
                            i.virtual_size
                        ),
                        None => format!("{} succeeded", self.source.verb()),
                    };
                    done.insert(annotation::POD_PHASE.into(), "Succeeded".into());
                    done.insert(annotation::RUNNING_REASON.into(), "Completed".into());
                    done.insert(annotation::RUNNING_MESSAGE.into(), msg.clone().into());
                    done.insert(annotation::PROGRESS.into(), "100.0%".into());
                    self.annotate(done).await;
                    tracing::info!(pvc = %self.key(), "{msg}");
                    self.record(
                        EventType::Normal,
                        &format!("{}Succeeded", self.source.verb()),
                        &msg,
                    )
                    .await;
                    return;
                }
                Err(e) if e.retryable() && self.restarts < MAX_RESTARTS => {
                    self.restarts += 1;
                    let delay = RETRY_BASE * 2u32.pow(self.restarts - 1);
                    let msg = format!(
                        "{e} (retry {} of {MAX_RESTARTS} in {}s)",
                        self.restarts,
                        delay.as_secs()
                    );
                    done.insert(
                        annotation::POD_RESTARTS.into(),
                        self.restarts.to_string().into(),
                    );
                    done.insert(annotation::RUNNING_REASON.into(), e.reason().into());
                    done.insert(annotation::RUNNING_MESSAGE.into(), msg.clone().into());
                    self.annotate(done).await;
                    tracing::warn!(pvc = %self.key(), "{msg}");
                    self.record(
                        EventType::Warning,
                        &format!("{}Retrying", self.source.verb()),
                        &msg,
                    )
                    .await;
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    done.insert(annotation::POD_PHASE.into(), "Failed".into());
                    done.insert(annotation::RUNNING_REASON.into(), e.reason().into());
                    done.insert(annotation::RUNNING_MESSAGE.into(), msg.clone().into());
                    self.annotate(done).await;
                    tracing::warn!(pvc = %self.key(), "population failed: {msg}");
                    self.record(
                        EventType::Warning,
                        &format!("{}Failed", self.source.verb()),
                        &msg,
                    )
                    .await;
                    return;
                }
            }
        }
    }

    fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    /// One transfer.
    async fn attempt(&self, progress: Arc<Progress>) -> Result<Option<Imported>, PopulateError> {
        match &self.source {
            Source::Blank => {
                import::blank(&self.target).await?;
                Ok(None)
            }
            Source::Http {
                url,
                secret,
                cert_config_map,
                checksum,
                extra_headers,
            } => {
                let checksum = checksum
                    .as_deref()
                    .map(str::parse::<Checksum>)
                    .transpose()
                    .map_err(|e| PopulateError::Setup(e.to_string()))?;
                let mut http = HttpSource {
                    url: url.clone(),
                    extra_headers: extra_headers.clone(),
                    ..HttpSource::default()
                };
                if let Some(s) = secret {
                    http.basic_auth = Some(self.credentials(s).await?);
                }
                if let Some(cm) = cert_config_map {
                    http.ca_pem = self.certificates(cm).await?;
                }
                let opened = http.open().await?;
                progress.set_total(opened.length);
                let imported =
                    import::import(opened.body, &self.target, checksum.as_ref(), progress).await?;
                Ok(Some(imported))
            }
            Source::Upload => {
                let imported = self
                    .ctx
                    .uploads
                    .wait(&self.key(), self.target.clone(), progress)
                    .await?;
                Ok(Some(imported))
            }
            Source::Clone { namespace, name } => {
                self.clone_from(namespace, name, progress).await.map(Some)
            }
        }
    }

    async fn credentials(&self, secret: &str) -> Result<(String, String), PopulateError> {
        let api = self.ctx.api(self.ctx.defs.secret, &self.ns);
        let s = api
            .get_opt(secret)
            .await
            .map_err(|e| PopulateError::Setup(format!("reading secret {secret}: {e}")))?
            .ok_or_else(|| PopulateError::Setup(format!("secret {secret} not found")))?;
        let field = |k: &str| -> Result<String, PopulateError> {
            let b64 = s["data"][k]
                .as_str()
                .ok_or_else(|| PopulateError::Setup(format!("secret {secret} has no key {k}")))?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    PopulateError::Setup(format!("secret {secret} key {k} is not base64"))
                })?;
            String::from_utf8(raw)
                .map_err(|_| PopulateError::Setup(format!("secret {secret} key {k} is not text")))
        };
        Ok((field("accessKeyId")?, field("secretKey")?))
    }

    async fn certificates(&self, cm: &str) -> Result<Vec<Vec<u8>>, PopulateError> {
        let api = self.ctx.api(self.ctx.defs.configmap, &self.ns);
        let c = api
            .get_opt(cm)
            .await
            .map_err(|e| PopulateError::Setup(format!("reading configmap {cm}: {e}")))?
            .ok_or_else(|| PopulateError::Setup(format!("configmap {cm} not found")))?;
        let pems: Vec<Vec<u8>> = c["data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, v)| v.as_str().map(|s| s.as_bytes().to_vec()))
            .collect();
        if pems.is_empty() {
            return Err(PopulateError::Setup(format!(
                "configmap {cm} holds no certificates"
            )));
        }
        Ok(pems)
    }

    async fn clone_from(
        &self,
        ns: &str,
        name: &str,
        progress: Arc<Progress>,
    ) -> Result<Imported, PopulateError> {
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ctx.client.clone(), self.ctx.defs.pvc, ns);
        let src = claims
            .get_opt(name)
            .await
            .map_err(|e| {
                PopulateError::Setup(format!("reading the source claim {ns}/{name}: {e}"))
            })?
            .ok_or_else(|| {
                PopulateError::Setup(format!("the source claim {ns}/{name} does not exist"))
            })?;
        if !is_populated(&src) {
            return Err(PopulateError::Setup(format!(
                "the source claim {ns}/{name} is not populated yet"
            )));
        }
        let dir = src
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .and_then(|v| self.ctx.pvs.get(v))
            .and_then(|pv| provisioner::volume_dir(&pv))
            .ok_or_else(|| {
                PopulateError::Setup(format!(
                    "the source claim {ns}/{name} is not bound to a local volume"
                ))
            })?;
        let from = dir.join(import::DISK_IMG);
        let size = std::fs::metadata(&from)
            .map_err(|e| PopulateError::Setup(format!("reading {}: {e}", from.display())))?
            .len();
        if size > self.target.capacity {
            return Err(ImportError::TooLarge {
                size,
                capacity: self.target.capacity,
            }
            .into());
        }
        progress.set_total(Some(size));
        self.target.clean();
        let to = self.target.partial();
        let copied = tokio::task::spawn_blocking(move || sparse::copy(&from, &to))
            .await
            .map_err(|e| PopulateError::Setup(format!("the copy task failed: {e}")))?;
        if let Err(e) = copied {
            self.target.clean();
            let path = self.target.partial();
            return Err(
                if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
                    ImportError::DiskFull(path)
                } else {
                    ImportError::Write(path, e)
                }
                .into(),
            );
        }
        if let Err(e) = import::finalize(&self.target).await {
            self.target.clean();
            return Err(e.into());
        }
        progress.set_total(Some(size));
        Ok(Imported {
            compression: None,
            format: super::format::Format::Raw,
            virtual_size: size,
            transferred: size,
        })
    }
}
