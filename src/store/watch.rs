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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::key::Key;
    use crate::store::testing::{opts, rv, store, store_with, vm, VM};
    use crate::store::{DeleteOptions, ListOptions, Objects, Patch, StoreConfig};

    async fn next(rx: &mut mpsc::Receiver<WatchEvent>) -> WatchEvent {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within the bound")
            .expect("the stream is open")
    }

    fn name(e: &WatchEvent) -> &str {
        e.object["metadata"]["name"].as_str().unwrap_or("")
    }

    /// Writes `n` objects in one transaction (one flush), bypassing the API checks.
    async fn bulk(s: &Objects, from: usize, n: usize) {
        let ((), ack) = s
            .write(false, |tx| {
                for i in from..from + n {
                    let key = Key::new(&VM, Some("default"), &format!("bulk-{i}"));
                    let mut o = vm(&format!("bulk-{i}"));
                    o["metadata"]["namespace"] = json!("default");
                    tx.put(&key, o, EventType::Added)?;
                }
                Ok(())
            })
            .expect("bulk write");
        ack.expect("committed").wait().await.expect("durable");
    }

    /// Watches the VMs from the current revision, then writes more of them than the
    /// watcher's buffers hold before it reads any: the watch and how many were written.
    async fn lagging_watch(s: &Objects) -> (mpsc::Receiver<WatchEvent>, usize) {
        let w = s
            .watch(
                &VM,
                None,
                &ListOptions {
                    resource_version: Some(s.revision().to_string()),
                    ..Default::default()
                },
            )
            .expect("watch");
        let n = BROADCAST_CAPACITY + STREAM_CAPACITY + 500;
        bulk(s, 0, n).await;
        (w, n)
    }

    #[tokio::test]
    async fn synthetic_added_then_changes_with_last_state_on_delete() {
        let (s, _dir) = store();
        s.create(&VM, Some("default"), vm("a"), &opts())
            .await
            .expect("a");
        s.create(&VM, Some("default"), vm("b"), &opts())
            .await
            .expect("b");
        for rv0 in [None, Some("0".to_string())] {
            let mut w = s
                .watch(
                    &VM,
                    Some("default"),
                    &ListOptions {
                        resource_version: rv0,
                        ..Default::default()
                    },
                )
                .expect("watch");
            let (e1, e2) = (next(&mut w).await, next(&mut w).await);
            assert_eq!((e1.type_, name(&e1)), (WatchEventType::Added, "a"));
            assert_eq!((e2.type_, name(&e2)), (WatchEventType::Added, "b"));
        }
        let mut w = s
            .watch(&VM, Some("default"), &ListOptions::default())
            .expect("watch");
        next(&mut w).await;
        next(&mut w).await;
        s.patch(
            &VM,
            Some("default"),
            "a",
            Patch::Merge(json!({"spec": {"cpus": 2}})),
            &opts(),
        )
        .await
        .expect("patch");
        let m = next(&mut w).await;
        assert_eq!(
            (m.type_, name(&m), m.object["spec"]["cpus"].as_i64()),
            (WatchEventType::Modified, "a", Some(2))
        );
        let d = s
            .delete(&VM, Some("default"), "a", &DeleteOptions::default())
            .await
            .expect("delete");
        let e = next(&mut w).await;
        assert_eq!(e.type_, WatchEventType::Deleted);
        assert_eq!(e.object, d.object, "DELETED carries the last state");
        assert_eq!(e.object["spec"]["cpus"], 2);
        assert_eq!(rv(&e.object), s.revision());
    }

    #[tokio::test]
    async fn filters_by_namespace_and_selectors() {
        let (s, _dir) = store();
        s.create(
            &crate::store::testing::NAMESPACE,
            None,
            json!({"metadata": {"name": "other"}}),
            &opts(),
        )
        .await
        .expect("ns");
        let from = Some(s.revision().to_string());
        let mut by_ns = s
            .watch(
                &VM,
                Some("other"),
                &ListOptions {
                    resource_version: from.clone(),
                    ..Default::default()
                },
            )
            .expect("watch");
        let mut by_name = s
            .watch(
                &VM,
                None,
                &ListOptions {
                    resource_version: from.clone(),
                    field_selector: Some("metadata.name=target".into()),
                    ..Default::default()
                },
            )
            .expect("watch");
        let mut by_label = s
            .watch(
                &VM,
                None,
                &ListOptions {
                    resource_version: from,
                    label_selector: Some("tier in (db)".into()),
                    ..Default::default()
                },
            )
            .expect("watch");
        s.create(&VM, Some("default"), vm("x"), &opts())
            .await
            .expect("x");
        let mut db = vm("y");
        db["metadata"]["labels"]["tier"] = json!("db");
        s.create(&VM, Some("default"), db, &opts())
            .await
            .expect("y");
        s.create(&VM, Some("default"), vm("target"), &opts())
            .await
            .expect("target");
        s.create(&VM, Some("other"), vm("z"), &opts())
            .await
            .expect("z");
        assert_eq!(name(&next(&mut by_ns).await), "z");
        assert_eq!(name(&next(&mut by_name).await), "target");
        assert_eq!(name(&next(&mut by_label).await), "y");
        // Nothing else arrives on the filtered streams.
        s.create(&VM, Some("other"), vm("target"), &opts())
            .await
            .expect("target in other");
        assert_eq!(name(&next(&mut by_ns).await), "target");
        let e = next(&mut by_name).await;
        assert_eq!(e.object["metadata"]["namespace"], "other");
        assert!(by_label.try_recv().is_err());
    }

    #[tokio::test]
    async fn resumes_from_a_revision_and_expires_when_compacted() {
        let (s, _dir) = store_with(StoreConfig {
            log_retention: 3,
            ..StoreConfig::default()
        });
        let mut revs = Vec::new();
        for i in 0..5 {
            revs.push(rv(&s
                .create(&VM, Some("default"), vm(&format!("v{i}")), &opts())
                .await
                .expect("create")
                .object));
        }
        let mut w = s
            .watch(
                &VM,
                None,
                &ListOptions {
                    resource_version: Some(revs[2].to_string()),
                    ..Default::default()
                },
            )
            .expect("watch");
        assert_eq!(name(&next(&mut w).await), "v3");
        assert_eq!(name(&next(&mut w).await), "v4");
        s.compact().expect("compact");
        let compacted = s.compacted_revision().expect("compacted");
        assert_eq!(compacted, s.revision() - 3);
        let e = s
            .watch(
                &VM,
                None,
                &ListOptions {
                    resource_version: Some("1".into()),
                    ..Default::default()
                },
            )
            .expect_err("too old");
        assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
        assert_eq!(
            e.message,
            format!("too old resource version: 1 ({compacted})")
        );
        assert_eq!(
            s.watch(
                &VM,
                None,
                &ListOptions {
                    resource_version: Some("x".into()),
                    ..Default::default()
                }
            )
            .expect_err("nan")
            .code,
            400
        );
        // A start exactly at the compacted revision still works.
        let mut w = s
            .watch(
                &VM,
                None,
                &ListOptions {
                    resource_version: Some(compacted.to_string()),
                    ..Default::default()
                },
            )
            .expect("watch at the edge");
        assert_eq!(rv(&next(&mut w).await.object), compacted + 1);
    }

    #[tokio::test]
    async fn bookmarks_carry_the_revision() {
        let (s, _dir) = store_with(StoreConfig {
            bookmark_interval: Duration::from_millis(50),
            ..StoreConfig::default()
        });
        s.create(&VM, Some("default"), vm("a"), &opts())
            .await
            .expect("a");
        let mut w = s
            .watch(
                &VM,
                None,
                &ListOptions {
                    allow_bookmarks: true,
                    ..Default::default()
                },
            )
            .expect("watch");
        assert_eq!(next(&mut w).await.type_, WatchEventType::Added);
        let b = next(&mut w).await;
        assert_eq!(b.type_, WatchEventType::Bookmark);
        assert_eq!(b.object["kind"], "VirtualMachine");
        assert_eq!(b.object["apiVersion"], "kubevirt.io/v1");
        assert_eq!(rv(&b.object), s.revision());
    }

    #[tokio::test]
    async fn a_lagging_watcher_catches_up_from_the_log() {
        let (s, _dir) = store();
        let (mut w, n) = lagging_watch(&s).await;
        let mut last = 0;
        for i in 0..n {
            let e = next(&mut w).await;
            assert_eq!(name(&e), format!("bulk-{i}"));
            assert!(rv(&e.object) > last);
            last = rv(&e.object);
        }
        assert!(w.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_watcher_overtaken_by_compaction_gets_an_error() {
        let (s, _dir) = store_with(StoreConfig {
            log_retention: 10,
            ..StoreConfig::default()
        });
        let (mut w, n) = lagging_watch(&s).await;
        s.compact().expect("compact");
        let mut got = 0;
        loop {
            let e = next(&mut w).await;
            if e.type_ == WatchEventType::Error {
                assert_eq!(e.object["code"], 410);
                assert_eq!(e.object["reason"], "Expired");
                break;
            }
            assert_eq!(
                name(&e),
                format!("bulk-{got}"),
                "events stay contiguous before the error"
            );
            got += 1;
            assert!(got < n, "the watcher cannot have seen everything");
        }
        assert!(w.recv().await.is_none(), "the stream ends after the error");
    }
}
