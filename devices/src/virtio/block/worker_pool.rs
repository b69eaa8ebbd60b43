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

/// The worker pool of one disk.
pub struct WorkerPool<M: GuestAddressSpace> {
    jobs: Option<Sender<Job<M>>>,
    completions: Receiver<Completion>,
    completion_event: Arc<EventFd>,
    in_flight: Arc<InFlight>,
    workers: Vec<JoinHandle<()>>,
}

impl<M: GuestAddressSpace> std::fmt::Debug for WorkerPool<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.workers.len())
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
    /// Starts `workers` threads named `<name>-<n>` over `disk`, each running `init` first.
    pub fn new(
        disk: Arc<DiskFile>,
        workers: usize,
        name: &str,
        init: Option<ThreadInit>,
    ) -> io::Result<Self> {
        let (job_tx, job_rx) = mpsc::channel::<Job<M>>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel();
        let completion_event = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let in_flight = Arc::new(InFlight::default());
        let mut handles = Vec::with_capacity(workers);
        for n in 0..workers.max(1) {
            let jobs = job_rx.clone();
            let done: Sender<Completion> = done_tx.clone();
            let event = completion_event.clone();
            let disk = disk.clone();
            let in_flight = in_flight.clone();
            let init = init.clone();
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{n}"))
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
                })?;
            handles.push(handle);
        }
        Ok(WorkerPool {
            jobs: Some(job_tx),
            completions: done_rx,
            completion_event,
            in_flight,
            workers: handles,
        })
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
        *lock_count(&self.in_flight) += 1;
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

impl<M: GuestAddressSpace> Drop for WorkerPool<M> {
    fn drop(&mut self) {
        // Closing the job channel ends every worker's loop.
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
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
