//! The push thread: one long-lived native thread that sends requests for
//! callers who must be able to stop waiting at once (`push_otlp` waits with
//! the Ruby GVL released, and an interrupt ends its wait even while the
//! receiver is silent).
//!
//! - **Lazily.** The thread starts at the first request sent through it,
//!   never at load or in a fork handler; a fork child starts its own at its
//!   first push (the parent's thread does not exist there).
//! - **One at a time.** Requests are sent in the order they come; a caller
//!   waits for its own with its [`Cancel`] checked.
//! - **Let go when abandoned.** A caller that stops waiting (cancelled, or
//!   its wait ran out) while its request is still on the wire retires the
//!   thread: it ends once that request ends, and the next request starts a
//!   new one. A request still queued when its caller stopped waiting is not
//!   sent (its cancel is set).
//! - **Bounded.** A retired thread lives until its request ends, by the
//!   request's timeout at the latest, with its connection open. At most
//!   [`MAX_PUSH_THREADS`] live at once: past that, a request is not sent
//!   (its caller is told at once), so that interrupting pushes to a
//!   collector that never answers cannot pile up threads and sockets.
//!
//! The background exporter does not use it: it sends on its own thread.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, sync_channel, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::{Delivery, Transport};
use super::retry::Cancel;
use super::settings::MAX_TIMEOUT;
use crate::support::fork::{forks, ForkSafeMutex};
use crate::support::interrupt;
use crate::support::thread::spawn_native;

/// The push thread's name.
pub const THREAD_NAME: &str = "tasker-push";

/// Most push threads alive at once in a process (see the module
/// documentation).
pub const MAX_PUSH_THREADS: usize = 4;

/// A request body the push thread can own.
pub type OwnedBody = Box<dyn AsRef<[u8]> + Send>;

/// One request for the push thread.
struct Job {
    transport: Transport,
    body: OwnedBody,
    cancel: Cancel,
    report: SyncSender<std::thread::Result<Delivery>>,
}

/// The process's push thread, started on demand.
pub struct PushSender {
    state: ForkSafeMutex<State>,
}

struct State {
    /// [`forks`] when `jobs` was made: a fork child makes its own.
    forks: u64,
    /// Counts threads started, so that only the thread a caller used is
    /// retired.
    thread: u64,
    jobs: Option<mpsc::Sender<Job>>,
    /// Push threads alive (made at the first, and again in a fork child).
    live: Option<Arc<AtomicUsize>>,
}

/// Why [`PushSender::submit`] did not queue a job.
enum NotQueued {
    /// No thread could start: the job, to send on the caller's thread.
    NoThread(Job),
    /// [`MAX_PUSH_THREADS`] live, retired while their requests were on the
    /// wire: how many.
    Busy(usize),
}

/// Counts a push thread alive while it runs.
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for PushSender {
    fn default() -> Self {
        PushSender::new()
    }
}

impl PushSender {
    /// No thread yet.
    pub const fn new() -> PushSender {
        PushSender {
            state: ForkSafeMutex::new(State {
                forks: 0,
                thread: 0,
                jobs: None,
                live: None,
            }),
        }
    }

    /// Makes the process-wide sender's lock fork-safe.
    pub fn register_for_fork(&'static self) -> bool {
        self.state.register()
    }

    /// Sends `body` through `transport` on the push thread while this
    /// thread waits: `cancel` ends the wait at once, even while the receiver
    /// is silent (the result is then `Failed`, "interrupted"; a request
    /// cancelled in flight may still have arrived). When no thread can be
    /// started, the request is sent on this thread.
    pub fn send(&self, transport: &Transport, body: OwnedBody, cancel: &Cancel) -> Delivery {
        let (report, rx) = sync_channel(1);
        let job = Job {
            transport: transport.clone(),
            body,
            cancel: cancel.share(),
            report,
        };
        let url = transport.target().shown_url();
        let thread = match self.submit(job) {
            Ok(thread) => thread,
            Err(NotQueued::NoThread(job)) => {
                return transport.send(job.body.as_ref().as_ref(), cancel)
            }
            Err(NotQueued::Busy(live)) => {
                return Delivery::Failed {
                    status: None,
                    too_large: false,
                    attempts: 0,
                    error: format!(
                        "not sent: {live} earlier requests to {url}, interrupted, are still \
                         in flight (each ends by its timeout)"
                    ),
                }
            }
        };
        // The thread ends a request by its deadline; this one is a guard
        // against a thread that never reports.
        let give_up =
            Instant::now() + transport.target().timeout.min(MAX_TIMEOUT) + Duration::from_secs(5);
        loop {
            match rx.try_recv() {
                Ok(Ok(delivery)) => return delivery,
                Ok(Err(panic)) => resume_unwind(panic),
                Err(TryRecvError::Disconnected) => {
                    return Delivery::Failed {
                        status: None,
                        too_large: false,
                        attempts: 0,
                        error: format!("the request to {url} ended without a result"),
                    }
                }
                Err(TryRecvError::Empty) => {}
            }
            if cancel.is_cancelled() {
                self.retire(thread);
                return Delivery::Failed {
                    status: None,
                    too_large: false,
                    attempts: 0,
                    error: format!(
                        "interrupted while the request to {url} was in flight (it may still arrive)"
                    ),
                };
            }
            let now = Instant::now();
            if now >= give_up {
                // Not sent yet (queued): it never will be.
                cancel.cancel();
                self.retire(thread);
                return Delivery::Failed {
                    status: None,
                    too_large: false,
                    attempts: 0,
                    error: format!("timed out waiting for the request to {url}"),
                };
            }
            let until = interrupt::wait_until(give_up);
            std::thread::park_timeout(until.saturating_duration_since(now));
            if interrupt::poll_due() {
                cancel.cancel();
            }
        }
    }

    /// Queues `job` for this process's thread, starting one if none runs.
    /// Returns the thread's number, or why the job was not queued.
    fn submit(&self, job: Job) -> Result<u64, NotQueued> {
        let mut s = self.state.lock();
        let now = forks();
        if s.forks != now {
            // The parent's threads do not exist here: never touch their
            // channel (it may be mid-operation in the parent's copy), and
            // count from none.
            std::mem::forget(s.jobs.take());
            std::mem::forget(s.live.take());
            s.forks = now;
        }
        let job = match &s.jobs {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => return Ok(s.thread),
                // The thread is gone: start another.
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let live = s
            .live
            .get_or_insert_with(|| Arc::new(AtomicUsize::new(0)))
            .clone();
        let alive = live.load(Ordering::Relaxed);
        if alive >= MAX_PUSH_THREADS {
            s.jobs = None;
            return Err(NotQueued::Busy(alive));
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        live.fetch_add(1, Ordering::Relaxed);
        let counted = live.clone();
        if spawn_native(THREAD_NAME, move || {
            let _alive = Alive(counted);
            run(queue)
        })
        .is_err()
        {
            live.fetch_sub(1, Ordering::Relaxed);
            s.jobs = None;
            return Err(NotQueued::NoThread(job));
        }
        s.thread += 1;
        let job = match jobs.send(job) {
            Ok(()) => None,
            Err(mpsc::SendError(job)) => Some(job),
        };
        s.jobs = Some(jobs);
        match job {
            None => Ok(s.thread),
            Some(job) => Err(NotQueued::NoThread(job)),
        }
    }

    /// Lets thread `thread` go: it ends after the request it is sending,
    /// and the next request starts a new thread.
    fn retire(&self, thread: u64) {
        let retired = {
            let mut s = self.state.lock();
            if s.thread == thread && s.forks == forks() {
                s.jobs.take()
            } else {
                None
            }
        };
        // The channel is closed outside the lock.
        drop(retired);
    }
}

/// The push thread: sends each job and reports, until its channel closes.
fn run(queue: mpsc::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        let Job {
            transport,
            body,
            cancel,
            report,
        } = job;
        cancel.register_worker();
        // Reports and wakes the waiter however the request ends.
        let mut end = JobEnd {
            cancel: cancel.share(),
            report: Some(report),
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            transport.send(body.as_ref().as_ref(), &cancel)
        }));
        if let Some(report) = end.report.take() {
            let _ = report.send(result);
        }
    }
}

/// The end of a job: its report channel is closed (after the report, if one
/// was sent) and then the waiting thread is woken, whether the request
/// returned or unwound.
struct JobEnd {
    cancel: Cancel,
    report: Option<SyncSender<std::thread::Result<Delivery>>>,
}

impl Drop for JobEnd {
    fn drop(&mut self) {
        drop(self.report.take());
        self.cancel.wake_waiter();
    }
}
