//! Starting the native threads: each with its own name, and with every
//! signal blocked in it, so that signals meant for Ruby (SIGINT, SIGTERM,
//! SIGCHLD ...) are delivered to Ruby's threads.

use std::thread::JoinHandle;

/// Spawns `f` on a new thread named `name` with every signal blocked.
pub fn spawn_native<F>(name: &str, f: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let builder = std::thread::Builder::new().name(name.to_string());
    with_signals_blocked(move || {
        builder.spawn(move || {
            super::fork::mark_native_thread();
            f()
        })
    })
}

#[cfg(unix)]
fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask reads it and
    // writes the calling thread's previous mask into `old`.
    let blocked = unsafe {
        libc::sigfillset(all.as_mut_ptr()) == 0
            && libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), old.as_mut_ptr()) == 0
    };
    // A new thread inherits the mask of the thread that spawns it.
    let r = f();
    if blocked {
        // SAFETY: `old` was written by the successful pthread_sigmask above;
        // this puts the calling thread's own mask back.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
        }
    }
    r
}

#[cfg(not(unix))]
fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    f()
}
