//! The reconcile loop shared by controllers, in kube-runtime's shape: keys come in from
//! watches (and requeues), each is reconciled by `reconcile(key, ctx) -> Action`, never two
//! reconciles of the same key at once (a key that changes mid-reconcile is run again after),
//! failures are retried with a per-key exponential backoff, and every key is resynced
//! periodically.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What to do after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long even without changes.
    Requeue(Duration),
    /// Wait for the next change (or the periodic resync).
    AwaitChange,
}

/// The first retry delay after a failed reconcile; it doubles per failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(5);
/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// The retry delay after `failures` consecutive failures (1 = the first).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

/// Runs `reconcile` for every key arriving on `keys` until `shutdown`. `all_keys` lists
/// every key for the periodic resync every `resync`.
pub async fn run<Ctx, F, Fut, E>(
    ctx: Arc<Ctx>,
    mut keys: mpsc::UnboundedReceiver<String>,
    all_keys: impl Fn(&Ctx) -> Vec<String>,
    reconcile: F,
    resync: Duration,
    shutdown: CancellationToken,
) where
    Ctx: Send + Sync + 'static,
    F: Fn(Arc<Ctx>, String) -> Fut,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut running: BTreeSet<String> = BTreeSet::new();
    // Keys that changed while being reconciled: run again when the reconcile ends.
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut scheduled: BTreeMap<String, Instant> = BTreeMap::new();
    let mut failures: BTreeMap<String, u32> = BTreeMap::new();
    let mut tasks: JoinSet<(String, Result<Action, E>)> = JoinSet::new();
    let mut resync_tick = tokio::time::interval(resync);
    let mut ready: Vec<String> = Vec::new();
    loop {
        let next_due = scheduled.values().min().copied();
        tokio::select! {
            () = shutdown.cancelled() => {
                tasks.shutdown().await;
                return;
            }
            key = keys.recv() => match key {
                Some(k) => ready.push(k),
                None => return,
            },
            _ = resync_tick.tick() => ready.extend(all_keys(&ctx)),
            () = sleep_until_opt(next_due) => {
                let now = Instant::now();
                let due: Vec<String> = scheduled
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in due {
                    scheduled.remove(&k);
                    ready.push(k);
                }
            }
            Some(done) = tasks.join_next() => {
                let Ok((key, result)) = done else { continue };
                running.remove(&key);
                match result {
                    Ok(Action::Requeue(after)) => {
                        failures.remove(&key);
                        scheduled.insert(key.clone(), Instant::now() + after);
                    }
                    Ok(Action::AwaitChange) => {
                        failures.remove(&key);
                    }
                    Err(e) => {
                        let n = failures.entry(key.clone()).or_default();
                        *n += 1;
                        let delay = backoff(*n);
                        tracing::warn!(%key, retry_in = ?delay, "reconcile failed: {e}");
                        scheduled.insert(key.clone(), Instant::now() + delay);
                    }
                }
                if dirty.remove(&key) {
                    ready.push(key);
                }
            }
        }
        while let Ok(k) = keys.try_recv() {
            ready.push(k);
        }
        for key in ready.drain(..) {
            if running.contains(&key) {
                dirty.insert(key);
                continue;
            }
            // A change supersedes a scheduled requeue or retry, as in kube-runtime's
            // scheduler: the object may have changed in a way that lets it succeed (a
            // new VMI replacing a failed one under the same key must not wait out the
            // old one's backoff, which reaches a minute). The failure count stays, so a
            // key that keeps failing still backs off between changes.
            scheduled.remove(&key);
            running.insert(key.clone());
            let fut = reconcile(ctx.clone(), key.clone());
            tasks.spawn(async move { (key, fut.await) });
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Ctx {
        calls: AtomicU32,
        concurrent: AtomicU32,
        max_concurrent: AtomicU32,
        log: Mutex<Vec<(String, Instant)>>,
    }

    /// Starts a reconcile loop over a fresh [`Ctx`], resyncing hourly: its context, key
    /// sender, stop token and task.
    fn start<F, Fut>(
        all_keys: fn(&Ctx) -> Vec<String>,
        reconcile: F,
    ) -> (
        Arc<Ctx>,
        mpsc::UnboundedSender<String>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    )
    where
        F: Fn(Arc<Ctx>, String) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Action, String>> + Send + 'static,
    {
        let ctx = Arc::new(Ctx::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            ctx.clone(),
            rx,
            all_keys,
            reconcile,
            Duration::from_secs(3600),
            stop.clone(),
        ));
        (ctx, tx, stop, task)
    }

    impl Ctx {
        /// When `key` was reconciled, as times since `since`.
        fn runs_of(&self, key: &str, since: Instant) -> Vec<Duration> {
            let log = self.log.lock().unwrap();
            log.iter()
                .filter(|(k, _)| k == key)
                .map(|(_, t)| *t - since)
                .collect()
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), BACKOFF_BASE);
        assert_eq!(backoff(2), BACKOFF_BASE * 2);
        assert_eq!(backoff(4), BACKOFF_BASE * 8);
        assert_eq!(backoff(100), BACKOFF_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn one_reconcile_per_key_at_once_and_reruns_after_changes() {
        let (ctx, tx, stop, task) = start(
            |_| Vec::new(),
            |ctx: Arc<Ctx>, key: String| async move {
                let now = ctx.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
                ctx.max_concurrent.fetch_max(now, Ordering::SeqCst);
                ctx.log.lock().unwrap().push((key, Instant::now()));
                tokio::time::sleep(Duration::from_millis(100)).await;
                ctx.concurrent.fetch_sub(1, Ordering::SeqCst);
                ctx.calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(Action::AwaitChange)
            },
        );
        for _ in 0..5 {
            tx.send("a".to_string()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.send("a".to_string()).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The burst before the first reconcile started and the change during it: two runs.
        assert_eq!(ctx.calls.load(Ordering::SeqCst), 2);
        assert_eq!(ctx.max_concurrent.load(Ordering::SeqCst), 1);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_runs_a_backing_off_key_at_once() {
        let (ctx, tx, stop, task) = start(
            |_| Vec::new(),
            |ctx: Arc<Ctx>, key: String| async move {
                let n = ctx.calls.fetch_add(1, Ordering::SeqCst);
                ctx.log.lock().unwrap().push((key, Instant::now()));
                // Fails until the 13th run: the 12th retry waits backoff(12) (> 10 s).
                if n < 12 {
                    Err("boom".to_string())
                } else {
                    Ok(Action::AwaitChange)
                }
            },
        );
        tx.send("k".to_string()).unwrap();
        // Twelve failures: the last retry is backoff(12) = 10.24 s away.
        let mut waited = Duration::ZERO;
        for n in 1..12 {
            waited += backoff(n);
        }
        tokio::time::sleep(waited + Duration::from_millis(1)).await;
        assert_eq!(ctx.calls.load(Ordering::SeqCst), 12);
        // A change does not wait for that retry.
        let t0 = Instant::now();
        tx.send("k".to_string()).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(ctx.calls.load(Ordering::SeqCst), 13);
        let last = ctx.log.lock().unwrap().last().unwrap().1;
        assert_eq!(last, t0);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn errors_back_off_and_requeues_fire() {
        let (ctx, tx, stop, task) = start(
            |_| vec!["r".to_string()],
            |ctx: Arc<Ctx>, key: String| async move {
                let n = {
                    let mut log = ctx.log.lock().unwrap();
                    let n = log.iter().filter(|(k, _)| *k == key).count();
                    log.push((key.clone(), Instant::now()));
                    n
                };
                match key.as_str() {
                    "fail" if n < 3 => Err("boom".to_string()),
                    "later" => Ok(Action::Requeue(Duration::from_secs(10))),
                    _ => Ok(Action::AwaitChange),
                }
            },
        );
        let start = Instant::now();
        tx.send("fail".to_string()).unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = ctx.runs_of("fail", start);
        // Three failures, then success: retries after 5, 10 and 20 ms.
        assert_eq!(log.len(), 4, "{log:?}");
        assert_eq!(log[1] - log[0], backoff(1));
        assert_eq!(log[2] - log[1], backoff(2));
        assert_eq!(log[3] - log[2], backoff(3));
        ctx.log.lock().unwrap().clear();
        let t0 = Instant::now();
        tx.send("later".to_string()).unwrap();
        tokio::time::sleep(Duration::from_secs(25)).await;
        let later = ctx.runs_of("later", t0);
        assert_eq!(later.len(), 3, "{later:?}");
        assert_eq!(later[1] - later[0], Duration::from_secs(10));
        // The resync tick ran "r" at the start.
        assert!(ctx.log.lock().unwrap().iter().all(|(k, _)| k != "fail"));
        stop.cancel();
        task.await.unwrap();
    }
}
