//! Asynchronous disk I/O: a pool of named threads that execute validated requests against
//! the image ([`super::transfer`]: guest memory is read and written in place), and
//! hand completions back to the device thread through a channel plus an eventfd the
//! device thread polls. A slow disk therefore only ever blocks a worker, never the device
//! loop, and the queue stays owned by the device thread alone.
//!
//! Why threads and not io_uring: portable to every host kernel and architecture we target
//! (s390x and ppc64le included) and to sandboxes that forbid io_uring, with the same
//! positioned vectored syscalls; the pool size bounds the number of requests in flight at
//! the disk, which is what io_uring's queue depth would do.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::disk::DiskFile;
use super::request::Request;
use super::transfer::{execute, Completion};

/// What each worker runs first, on itself (the VMM installs its seccomp filter there). An
/// error ends that worker before it takes any job; the hook reports it (and fails its VM).
#[derive(Clone)]
pub struct ThreadInit(pub Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl std::fmt::Debug for ThreadInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadInit")
    }
}

impl PartialEq for ThreadInit {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ThreadInit {}

struct Job<M> {
    queue: u16,
    request: Request,
    mem: M,
}

/// Requests handed to workers and not yet completed.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

/// What a new worker thread needs: the shared ends of the job and completion channels.
struct Spawner<M> {
    jobs: Arc<Mutex<Receiver<Job<M>>>>,
    done: Sender<Completion>,
    completion_event: Arc<EventFd>,
    in_flight: Arc<InFlight>,
    disk: Arc<DiskFile>,
    init: Option<ThreadInit>,
    name: String,
}

/// The worker pool of one disk.
pub struct WorkerPool<M: GuestAddressSpace> {
    jobs: Option<Sender<Job<M>>>,
    completions: Receiver<Completion>,
    completion_event: Arc<EventFd>,
    in_flight: Arc<InFlight>,
    spawner: Spawner<M>,
    max_workers: usize,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl<M: GuestAddressSpace> std::fmt::Debug for WorkerPool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.workers.lock().map_or(0, |w| w.len()))
            .field("max_workers", &self.max_workers)
            .finish_non_exhaustive()
    }
}

fn lock_count(in_flight: &InFlight) -> std::sync::MutexGuard<'_, usize> {
    in_flight
        .count
        .lock()
        .expect("in-flight counter lock poisoned: a worker panicked")
}

impl<M> WorkerPool<M>
where
    M: GuestAddressSpace + Send + 'static,
{
    /// Starts the pool of `disk` with one thread named `<name>-0`; it grows to at most
    /// `max_workers` threads (`<name>-<n>`), each running `init` first.
    pub fn new(
        disk: Arc<DiskFile>,
        max_workers: usize,
        name: &str,
        init: Option<ThreadInit>,
    ) -> io::Result<Self> {
        let (job_tx, job_rx) = mpsc::channel::<Job<M>>();
        let (done_tx, done_rx) = mpsc::channel();
        let completion_event = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let in_flight = Arc::new(InFlight::default());
        let spawner = Spawner {
            jobs: Arc::new(Mutex::new(job_rx)),
            done: done_tx,
            completion_event: completion_event.clone(),
            in_flight: in_flight.clone(),
            disk,
            init,
            name: name.to_string(),
        };
        let first = spawner.spawn(0)?;
        Ok(WorkerPool {
            jobs: Some(job_tx),
            completions: done_rx,
            completion_event,
            in_flight,
            spawner,
            max_workers: max_workers.max(1),
            workers: Mutex::new(vec![first]),
        })
    }

    /// How many worker threads the pool has started.
    pub fn worker_count(&self) -> usize {
        self.lock_workers().len()
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.workers
            .lock()
            .expect("worker list lock poisoned: a spawn panicked")
    }

    /// Adds a worker when more requests are in flight than there are workers (some wait
    /// in the channel), unless the pool is at its maximum.
    fn grow_for(&self, in_flight: usize) {
        let mut workers = self.lock_workers();
        if in_flight <= workers.len() || workers.len() >= self.max_workers {
            return;
        }
        // A thread that cannot be created leaves the request queued for the existing
        // workers: slower, not wrong.
        if let Ok(worker) = self.spawner.spawn(workers.len()) {
            workers.push(worker);
        }
    }

    /// The eventfd that becomes readable when completions are waiting.
    pub fn completion_event(&self) -> &EventFd {
        &self.completion_event
    }

    /// Hands a validated request to the workers.
    pub fn submit(&self, queue: u16, request: Request, mem: M) {
        let Some(jobs) = self.jobs.as_ref() else {
            return;
        };
        let in_flight = {
            let mut count = lock_count(&self.in_flight);
            *count += 1;
            *count
        };
        self.grow_for(in_flight);
        if jobs
            .send(Job {
                queue,
                request,
                mem,
            })
            .is_err()
        {
            // All workers are gone (only after a worker panic): undo the count so that
            // reset does not wait forever.
            *lock_count(&self.in_flight) -= 1;
        }
    }

    /// The next completion, if any.
    pub fn next_completion(&self) -> Option<Completion> {
        // Empty, or disconnected because the workers are gone: nothing to publish.
        self.completions.try_recv().ok()
    }

    /// Waits until no request is in flight and discards their completions: after this,
    /// no worker touches guest memory for a request submitted earlier.
    pub fn drain(&self) {
        let mut count = lock_count(&self.in_flight);
        while *count > 0 {
            count = self
                .in_flight
                .idle
                .wait(count)
                .expect("in-flight counter lock poisoned: a worker panicked");
        }
        drop(count);
        while self.next_completion().is_some() {}
        let _ = self.completion_event.read();
    }
}

impl<M: GuestAddressSpace> WorkerPool<M> {
    /// Ends every worker once its job is done and joins them; the pool takes no more
    /// jobs. Dropping the pool does this too.
    pub(super) fn shut_down(&mut self) {
        // Closing the job channel ends every worker's loop.
        self.jobs = None;
        let workers = std::mem::take(
            self.workers
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for worker in workers {
            let _ = worker.join();
        }
    }
}

impl<M: GuestAddressSpace> Drop for WorkerPool<M> {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl<M: GuestAddressSpace + Send + 'static> Spawner<M> {
    /// Starts worker `n`: it runs the init hook, then takes jobs until the pool is dropped.
    fn spawn(&self, n: usize) -> io::Result<JoinHandle<()>> {
        let jobs = self.jobs.clone();
        let done = self.done.clone();
        let event = self.completion_event.clone();
        let disk = self.disk.clone();
        let in_flight = self.in_flight.clone();
        let init = self.init.clone();
        std::thread::Builder::new()
            .name(format!("{}-{n}", self.name))
            .spawn(move || {
                if let Some(ThreadInit(init)) = init {
                    if init().is_err() {
                        return;
                    }
                }
                loop {
                    // Hold the receiver lock only while waiting for the next job.
                    let job = match jobs.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else {
                        // The pool was dropped.
                        return;
                    };
                    let completion = execute_job(&disk, job);
                    // The device may be gone; then nobody wants the completion.
                    let _ = done.send(completion);
                    let _ = event.write(1);
                    let mut count = lock_count(&in_flight);
                    *count -= 1;
                    if *count == 0 {
                        in_flight.idle.notify_all();
                    }
                }
            })
    }
}

fn execute_job<M: GuestAddressSpace>(disk: &DiskFile, job: Job<M>) -> Completion {
    let Job {
        queue,
        request,
        mem,
    } = job;
    let guard = mem.memory();
    execute(disk, &*guard, queue, request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::block::request::RequestKind;
    use crate::virtio::block::CacheMode;
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::tempfile::TempFile;

    fn flush(head: u16) -> Request {
        Request {
            head,
            kind: RequestKind::Flush,
            data: Vec::new(),
            data_len: 0,
            status: GuestAddress(0x100 + u64::from(head)),
        }
    }

    #[test]
    fn starts_with_one_worker_and_grows_only_while_requests_wait() {
        let image = TempFile::new().unwrap();
        image.as_file().set_len(1 << 20).unwrap();
        let disk =
            Arc::new(DiskFile::open(image.as_path(), false, Some(CacheMode::Writeback)).unwrap());
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap());
        let pool: WorkerPool<Arc<GuestMemoryMmap<()>>> =
            WorkerPool::new(disk, 3, "blk-test", None).unwrap();
        assert_eq!(pool.worker_count(), 1);

        // One request at a time never needs a second worker.
        for head in 0..4 {
            pool.submit(0, flush(head), mem.clone());
            pool.drain();
        }
        assert_eq!(pool.worker_count(), 1);

        // More requests in flight than workers: one worker more each time, never past
        // the maximum.
        pool.grow_for(2);
        assert_eq!(pool.worker_count(), 2);
        pool.grow_for(2);
        assert_eq!(pool.worker_count(), 2);
        for _ in 0..5 {
            pool.grow_for(32);
        }
        assert_eq!(pool.worker_count(), 3);
        // The grown pool still serves requests.
        for head in 0..8 {
            pool.submit(0, flush(head), mem.clone());
        }
        pool.drain();
        assert_eq!(pool.worker_count(), 3);
    }
}
