//! Group commit: writers apply their transaction to the backend under the write lock,
//! then hand its events to the committer thread and wait for the acknowledgement. The
//! committer takes every pending write, makes them durable with ONE backend flush, then
//! publishes their events to watchers (in revision order) and acknowledges them. So N
//! concurrent writers share one fsync, and no watcher ever sees a write that a crash
//! could still lose.

use super::backend::Backend;
use super::watch::{Event, Hub};
use api::status::ApiError;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::oneshot;

struct Pending {
    events: Vec<Arc<Event>>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle writers submit to; dropping it stops the thread after the last flush.
pub(crate) struct Committer {
    tx: Option<mpsc::Sender<Pending>>,
    thread: Option<JoinHandle<()>>,
}

/// Resolves when a submitted write is durable.
#[must_use = "a write is acknowledged only once its Ack resolves"]
pub(crate) struct Ack(oneshot::Receiver<Result<(), String>>);

fn failed(detail: String) -> ApiError {
    tracing::error!(%detail, "store flush failed");
    ApiError::internal("The write could not be made durable")
}

impl Ack {
    pub async fn wait(self) -> Result<(), ApiError> {
        match self.0.await {
            Ok(r) => r.map_err(failed),
            Err(_) => Err(failed("committer stopped".into())),
        }
    }

    /// For the collector's thread (not on a tokio worker).
    pub fn wait_blocking(self) -> Result<(), ApiError> {
        match self.0.blocking_recv() {
            Ok(r) => r.map_err(failed),
            Err(_) => Err(failed("committer stopped".into())),
        }
    }
}

impl Committer {
    pub fn start(backend: Arc<dyn Backend>, hub: Arc<Hub>) -> Self {
        let (tx, rx) = mpsc::channel::<Pending>();
        let thread = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(move || run(backend, hub, rx))
            .expect("spawning the committer thread");
        Self {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queues a committed write. Must be called under the write lock, so that the queue
    /// is in revision order.
    pub fn submit(&self, events: Vec<Arc<Event>>) -> Ack {
        let (done, rx) = oneshot::channel();
        if let Some(tx) = &self.tx {
            // A send error means the thread is gone; the dropped `done` fails the Ack.
            let _ = tx.send(Pending { events, done });
        }
        Ack(rx)
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(backend: Arc<dyn Backend>, hub: Arc<Hub>, rx: mpsc::Receiver<Pending>) {
    // Events of writes whose flush failed: they are in the backend and become durable
    // with a later successful flush, so they are published then.
    let mut unpublished: Vec<Arc<Event>> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        match backend.flush() {
            Ok(()) => {
                let events: Vec<Arc<Event>> = unpublished
                    .drain(..)
                    .chain(batch.iter().flat_map(|p| p.events.iter().cloned()))
                    .collect();
                hub.publish(events);
                for p in batch {
                    let _ = p.done.send(Ok(()));
                }
            }
            Err(e) => {
                let detail = format!("{e}: {:?}", std::error::Error::source(&e));
                for p in batch {
                    unpublished.extend(p.events.iter().cloned());
                    let _ = p.done.send(Err(detail.clone()));
                }
            }
        }
    }
}
