//! Watches: the [`Hub`] fans durable events out to every watcher over a tokio broadcast
//! channel; each watcher task filters them (resource, namespace, selectors) into its own
//! bounded stream. A watcher that starts from an older revision, or falls behind the
//! broadcast buffer, reads the missing events from the backend's watch log instead, so
//! every event reaches every watcher exactly once and in revision order — or the watcher
//! gets an ERROR 410 when the log was compacted past it.

use super::backend::{Backend, EventType};
use super::options::{WatchEvent, WatchEventType};
use super::selector::{FieldSelector, LabelSelector};
use api::status::ApiError;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// One durable change, shared by all watchers.
#[derive(Debug)]
pub(crate) struct Event {
    pub revision: u64,
    pub event: EventType,
    pub key: String,
    pub object: Arc<Value>,
}

/// Capacity of the broadcast buffer; a watcher further behind reads from the log.
const BROADCAST_CAPACITY: usize = 4096;
/// Capacity of each watcher's outgoing stream.
pub(crate) const STREAM_CAPACITY: usize = 1024;
/// Log entries read per backend call while catching up.
const CATCH_UP_CHUNK: usize = 512;

/// The fan-out point: the durable revision and the broadcast of durable events.
pub(crate) struct Hub {
    durable: AtomicU64,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Hub {
    pub fn new(durable: u64) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            durable: AtomicU64::new(durable),
            tx,
        }
    }

    /// The highest revision known durable (and so published).
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Marks the events durable, then broadcasts them (in revision order). The order
    /// matters: a watcher subscribes, then reads `durable` and catches up from the log up
    /// to it, so every event is either in its log read or in its broadcast receiver.
    pub fn publish(&self, events: Vec<Arc<Event>>) {
        if let Some(max) = events.iter().map(|e| e.revision).max() {
            self.durable.fetch_max(max, Ordering::AcqRel);
        }
        for e in events {
            // No receivers is fine: nobody is watching.
            let _ = self.tx.send(e);
        }
    }
}

/// What one watch selects.
pub(crate) struct Filter {
    pub prefix: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, key: &str, object: &Value) -> bool {
        key.starts_with(&self.prefix) && self.labels.matches(object) && self.fields.matches(object)
    }
}

/// Where a watch task starts and what it sends first.
pub(crate) struct Start {
    /// Events after this revision are sent.
    pub revision: u64,
    /// Synthetic ADDED events sent before anything else.
    pub initial: Vec<Value>,
    /// `Some((interval, kind, apiVersion))` when bookmarks are wanted.
    pub bookmarks: Option<(Duration, &'static str, String)>,
}

fn event_type(t: EventType) -> WatchEventType {
    match t {
        EventType::Added => WatchEventType::Added,
        EventType::Modified => WatchEventType::Modified,
        EventType::Deleted => WatchEventType::Deleted,
    }
}

/// The 410 of a watch or list from a compacted revision (kube-apiserver's wording).
pub(crate) fn too_old(requested: u64, compacted: u64) -> ApiError {
    ApiError::expired(format!(
        "too old resource version: {requested} ({compacted})"
    ))
}

/// Runs one watch until its receiver is dropped or the log is compacted past it.
pub(crate) async fn run(
    backend: Arc<dyn Backend>,
    hub: Arc<Hub>,
    filter: Filter,
    start: Start,
    mut rx: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<WatchEvent>,
) {
    let hub = &*hub;
    for object in start.initial {
        if tx
            .send(WatchEvent {
                type_: WatchEventType::Added,
                object,
            })
            .await
            .is_err()
        {
            return;
        }
    }
    let mut last = start.revision;
    if let Err(e) = catch_up(&*backend, hub, &filter, &mut last, &tx).await {
        send_error(&tx, e).await;
        return;
    }
    let mut ticker = start.bookmarks.as_ref().map(|(every, _, _)| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + *every, *every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        let tick = async {
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tx.closed() => return,
            r = rx.recv() => match r {
                Ok(ev) => {
                    if ev.revision <= last {
                        continue;
                    }
                    if ev.revision != last + 1 {
                        // Published out of the order we expect (a batch after a failed
                        // flush): read the gap from the log.
                        if let Err(e) = catch_up(&*backend, hub, &filter, &mut last, &tx).await {
                            send_error(&tx, e).await;
                            return;
                        }
                        if ev.revision <= last {
                            continue;
                        }
                    }
                    last = ev.revision;
                    if filter.matches(&ev.key, &ev.object) {
                        let out = WatchEvent { type_: event_type(ev.event), object: (*ev.object).clone() };
                        if tx.send(out).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Err(e) = catch_up(&*backend, hub, &filter, &mut last, &tx).await {
                        send_error(&tx, e).await;
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick => {
                if let Some((_, kind, api_version)) = &start.bookmarks {
                    let object = json!({"kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": last.to_string()}});
                    if tx.send(WatchEvent { type_: WatchEventType::Bookmark, object }).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn send_error(tx: &mpsc::Sender<WatchEvent>, e: ApiError) {
    let _ = tx
        .send(WatchEvent {
            type_: WatchEventType::Error,
            object: e.to_status(),
        })
        .await;
}

/// Sends every matching logged event after `*last` up to the durable revision.
async fn catch_up(
    backend: &dyn Backend,
    hub: &Hub,
    filter: &Filter,
    last: &mut u64,
    tx: &mpsc::Sender<WatchEvent>,
) -> Result<(), ApiError> {
    let internal = |e: super::backend::BackendError| {
        tracing::error!(error = %e, "reading the watch log");
        ApiError::internal("Reading the watch log failed")
    };
    loop {
        let durable = hub.durable();
        if *last >= durable {
            return Ok(());
        }
        let entries = backend.log_after(*last, CATCH_UP_CHUNK).map_err(internal)?;
        let compacted = backend.compacted().map_err(internal)?;
        if entries.first().map(|e| e.revision) != Some(*last + 1) {
            return Err(too_old(*last, compacted));
        }
        for e in entries {
            if e.revision > durable {
                break;
            }
            *last = e.revision;
            if !e.key.starts_with(&filter.prefix) {
                continue;
            }
            let object: Value = serde_json::from_slice(&e.object).map_err(|err| {
                tracing::error!(error = %err, revision = e.revision, "corrupt watch log entry");
                ApiError::internal("Reading the watch log failed")
            })?;
            if filter.matches(&e.key, &object) {
                let out = WatchEvent {
                    type_: event_type(e.event),
                    object,
                };
                if tx.send(out).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
