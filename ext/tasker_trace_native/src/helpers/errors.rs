//! Errors and panics at the Ruby boundary.
//!
//! `TaskerTraceNative::Error` is defined in Ruby, before the extension
//! loads; [`error_class`] looks it up when it raises. Rust panics never
//! unwind into Ruby: [`guarded`] and [`build_protected`] turn them into that
//! error, and `handle_event` turns them into a `false` return.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use magnus::error::ErrorType;
use magnus::prelude::*;
use magnus::rb_sys::AsRawValue;
use magnus::{Error, ExceptionClass, RString, Ruby, Value as RValue};
use rb_sys::VALUE;

use crate::process::root_module;
use crate::to_ruby::values::{nil, wrap};

/// Set by the hidden test hook: the next guarded native call panics on purpose.
static PANIC_NEXT_CALL: AtomicBool = AtomicBool::new(false);

/// `TaskerTraceNative::Error` (defined in Ruby, by
/// `lib/tasker_trace_native/error.rb`), looked up when needed rather than
/// kept in Rust.
pub fn error_class(ruby: &Ruby) -> ExceptionClass {
    root_module(ruby)
        .and_then(|m| m.const_get::<_, ExceptionClass>("Error"))
        .unwrap_or_else(|_| ruby.exception_runtime_error())
}

pub fn native_error(ruby: &Ruby, message: impl Into<String>) -> Error {
    Error::new(error_class(ruby), message.into())
}

pub fn argument_error(ruby: &Ruby, message: impl Into<String>) -> Error {
    Error::new(ruby.exception_arg_error(), message.into())
}

/// Arms the test hook (`TaskerTraceNative::TestHooks.panic_next_call!`).
pub fn arm_test_panic() {
    PANIC_NEXT_CALL.store(true, Ordering::SeqCst);
}

/// Panics when the test hook is armed; called first inside every guarded section.
/// It unwinds exactly as a panic does but skips the panic hook, so the test
/// suite's output is not filled with backtraces; real panics still print theirs.
pub fn maybe_injected_panic() {
    if PANIC_NEXT_CALL.load(Ordering::Relaxed) && PANIC_NEXT_CALL.swap(false, Ordering::SeqCst) {
        std::panic::resume_unwind(Box::new("injected test panic"));
    }
}

pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// The message a caught panic is reported with: `internal error: <panic>`.
pub fn panic_report(payload: &(dyn Any + Send)) -> String {
    format!("internal error: {}", panic_message(payload))
}

/// A caught panic as `TaskerTraceNative::Error`.
pub fn panic_error(ruby: &Ruby, payload: &(dyn Any + Send)) -> Error {
    native_error(ruby, panic_report(payload))
}

/// Runs `f`, turning a Rust panic into `TaskerTraceNative::Error`.
pub fn guarded<T>(ruby: &Ruby, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    match catch_unwind(AssertUnwindSafe(|| {
        maybe_injected_panic();
        f()
    })) {
        Ok(result) => result,
        Err(payload) => Err(panic_error(ruby, payload.as_ref())),
    }
}

/// Runs `build` under `rb_protect`, with panics caught inside: a Ruby
/// exception raised while building (see [`crate::to_ruby::values`]) or a
/// panic comes back as an error after the protect boundary. `build` and everything it
/// calls must own no value with a destructor while they call Ruby.
pub fn build_protected(ruby: &Ruby, build: impl FnOnce() -> VALUE) -> Result<VALUE, Error> {
    let mut panic: Option<Box<dyn std::any::Any + Send>> = None;
    let slot = &mut panic;
    let built = magnus::rb_sys::protect(move || {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)) {
            Ok(v) => v,
            Err(p) => {
                *slot = Some(p);
                nil()
            }
        }
    });
    match panic {
        Some(p) => Err(panic_error(ruby, p.as_ref())),
        None => built,
    }
}

/// Whether an error from Ruby code should propagate instead of being absorbed:
/// non-local exits (throw, Thread#kill) and exceptions that stop a thread or
/// the process (Interrupt, SystemExit, NoMemoryError, Timeout's exit, other
/// direct Exception subclasses) keep their meaning. What a broken payload
/// object raises is absorbed: StandardError, and also ScriptError (a
/// `NotImplementedError` from an abstract `to_s`) and SystemStackError (a
/// `to_s` that recurses forever), which are not StandardErrors.
pub fn must_propagate(ruby: &Ruby, err: &Error) -> bool {
    match err.error_type() {
        ErrorType::Jump(_) => true,
        _ => ![
            ruby.exception_standard_error(),
            ruby.exception_script_error(),
            ruby.exception_sys_stack_error(),
        ]
        .into_iter()
        .any(|class| err.is_kind_of(class)),
    }
}

/// The message of an error, for logs. A `message` method that fails with a
/// StandardError gives "unknown error"; one that raises something that must
/// propagate (an interrupt, a throw) gives that error instead.
pub fn error_message(ruby: &Ruby, err: &Error) -> Result<String, Error> {
    match err.error_type() {
        ErrorType::Error(_, msg) => Ok(msg.to_string()),
        ErrorType::Exception(e) => match e.funcall::<_, _, RValue>("message", ()) {
            Ok(m) => Ok(RString::from_value(m)
                .and_then(|s| s.to_string().ok())
                .unwrap_or_else(|| "unknown error".to_string())),
            Err(e) if must_propagate(ruby, &e) => Err(e),
            Err(_) => Ok("unknown error".to_string()),
        },
        ErrorType::Jump(_) => Ok("non-local exit".to_string()),
    }
}

/// `v.inspect`, for error messages. An `inspect` that fails with a
/// StandardError (or returns no String) gives Ruby's default
/// `#<Class:0x...>`; an interrupt or a throw raised by it propagates.
pub fn inspect(ruby: &Ruby, v: RValue) -> Result<String, Error> {
    match v.funcall::<_, _, RValue>("inspect", ()) {
        Ok(s) => {
            if let Some(s) = RString::from_value(s) {
                if let Ok(text) = s.to_string() {
                    return Ok(text);
                }
            }
        }
        Err(e) if must_propagate(ruby, &e) => return Err(e),
        Err(_) => {}
    }
    // SAFETY: rb_any_to_s builds "#<Class:0x...>" without calling user code.
    let fallback = unsafe { rb_sys::rb_any_to_s(v.as_raw()) };
    Ok(RString::from_value(wrap(fallback))
        .and_then(|s| s.to_string().ok())
        .unwrap_or_default())
}

/// A value shown in an error message: its `inspect`, at most 80
/// characters. An interrupt raised by `inspect` is the error instead.
pub fn shown(ruby: &Ruby, v: RValue) -> Result<String, Error> {
    Ok(inspect(ruby, v)?.chars().take(80).collect())
}

/// Raises `e` (or resumes its non-local exit) from a function the VM calls
/// directly, without magnus' wrapper: the exception is made first, then
/// everything is dropped, then control leaves by longjmp.
pub fn raise_from_raw(e: Error) -> ! {
    let exit = Exit::raised(&e).unwrap_or_else(|| {
        let ErrorType::Error(class, message) = e.error_type() else {
            unreachable!("Exit::raised takes jumps and exceptions")
        };
        let ruby = Ruby::get_with(*class);
        let text = ruby.str_new(message.as_ref()).as_raw();
        // SAFETY: an exception class and a String; `new` runs, and should it
        // raise, only this message's copy is leaked.
        Exit::Exception(unsafe { rb_sys::rb_exc_new_str(class.as_raw(), text) })
    });
    drop(e);
    // SAFETY: what `Exit::resume` asks: nothing on this frame needs
    // dropping, and an Exception made here is referenced from this stack.
    unsafe { exit.resume() }
}

/// A non-local exit to resume: a `throw` or kill's tag, or an Exception.
#[derive(Clone, Copy)]
enum Exit {
    Jump(std::os::raw::c_int),
    Exception(VALUE),
}

impl Exit {
    /// What `e` resumes when it was raised already (a protected call's
    /// jump, or an Exception object); `None` for one not raised yet.
    fn raised(e: &Error) -> Option<Exit> {
        match e.error_type() {
            ErrorType::Jump(tag) => Some(Exit::Jump(*tag as std::os::raw::c_int)),
            ErrorType::Exception(exception) => Some(Exit::Exception(exception.as_raw())),
            ErrorType::Error(..) => None,
        }
    }

    /// Leaves by longjmp.
    ///
    /// # Safety
    /// Nothing on the caller's frames up to the catching one needs
    /// dropping; a jump's tag comes from a protected call that exited this
    /// way with nothing run since (`$!` still holds what it left); an
    /// Exception is referenced from the stack, so the GC keeps it.
    unsafe fn resume(self) -> ! {
        match self {
            // SAFETY: see the function's safety section.
            Exit::Jump(tag) => unsafe { rb_sys::rb_jump_tag(tag) },
            // SAFETY: see the function's safety section.
            Exit::Exception(exception) => unsafe { rb_sys::rb_exc_raise(exception) },
        }
    }
}

/// Forgets what an exit caught just now left in the thread's `$!`, inside
/// the `rest` of [`raise_after`] (which puts back what the exit it raises
/// left): a `throw` or a kill leaves there what is no exception, and
/// magnus puts `$!` back after catching an exception, which raises a
/// TypeError for such a value.
pub fn forget_exit() {
    // SAFETY: setting `$!` to nil calls no Ruby code and cannot raise.
    unsafe { rb_sys::rb_set_errinfo(rb_sys::Qnil as VALUE) };
}

/// Runs `rest`, then gives `first` back to propagate at once: an error a
/// protected call returned just now, with no Ruby code run since. `rest`
/// may run Ruby code (each call of it protected) and must not leave by a
/// non-local exit.
///
/// Why: a non-local exit (a `throw`, a kill) lives on in the thread's `$!`
/// until it is resumed, and Ruby code that `rest` runs would overwrite it.
/// So `first` is raised again at once, inside `rb_ensure`, and `rest` runs
/// as its ensure clause, which Ruby runs with the exit put aside and puts
/// back after (as a Ruby `ensure` is run during a `throw`); `rb_protect`
/// catches it again on the way out. An exit that `rest` meets is its own
/// to deal with (see [`forget_exit`]): the one propagated is `first`.
pub fn raise_after<F: FnOnce()>(first: Error, rest: F) -> Error {
    let Some(exit) = Exit::raised(&first) else {
        // Not raised yet: nothing of it lives in the thread.
        let _ = catch_unwind(AssertUnwindSafe(rest));
        return first;
    };

    unsafe extern "C" fn raise_exit(data: VALUE) -> VALUE {
        // SAFETY: `data` points to the `Exit` on `raise_after`'s frame, alive
        // until `rb_ensure` returns; it is copied, so nothing here needs
        // dropping before control leaves by longjmp.
        let exit = unsafe { *(data as *const Exit) };
        // SAFETY: nothing here needs dropping; a tag came from a protected
        // call with nothing run since, and an Exception is referenced from
        // `first` on `raise_after`'s frame.
        unsafe { exit.resume() }
    }

    unsafe extern "C" fn run_rest<R: FnOnce()>(data: VALUE) -> VALUE {
        // SAFETY: `data` points to the `Option<F>` on `raise_after`'s frame,
        // alive until `rb_ensure` returns, and taken only here.
        let rest = unsafe { (*(data as *mut Option<R>)).take() };
        // Called by Ruby through C: a panic must not unwind out of it.
        if let Some(rest) = rest {
            let _ = catch_unwind(AssertUnwindSafe(rest));
        }
        rb_sys::Qnil as VALUE
    }

    let mut rest = Some(rest);
    let again = magnus::rb_sys::protect(|| {
        // SAFETY: both functions take their data as a pointer to a value on
        // this frame, which outlives the call; `raise_exit` leaves by
        // longjmp, which `rb_ensure` catches to run `run_rest` (which never
        // unwinds nor jumps) and resumes, and magnus' `rb_protect` stops.
        unsafe {
            rb_sys::rb_ensure(
                Some(raise_exit),
                &exit as *const Exit as VALUE,
                Some(run_rest::<F>),
                &mut rest as *mut Option<F> as VALUE,
            )
        }
    });
    match again {
        Err(e) => e,
        // `raise_exit` never returns.
        Ok(_) => first,
    }
}
