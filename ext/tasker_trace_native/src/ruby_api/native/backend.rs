//! The `TaskerTraceNative::Native` module functions of the drop-in backend:
//! `created_at_ns` (what `BackendMethods#created_at` is built from) and
//! `instance_id`.

use magnus::{function, Error, Integer, RModule, Ruby, Value as RValue};

use crate::helpers::errors::guarded;
use crate::process::backend;
use crate::to_ruby::values::{utf8_to_ruby, wrap};

/// Nanoseconds since the epoch at which the backend was created.
fn created_at_ns(ruby: &Ruby) -> Result<Integer, Error> {
    guarded(ruby, || {
        Ok(ruby.integer_from_i64(backend().created_at().wall_ns))
    })
}

fn instance_id(ruby: &Ruby) -> Result<RValue, Error> {
    guarded(ruby, || Ok(wrap(utf8_to_ruby(backend().instance_id()))))
}

pub fn define(native: RModule) -> Result<(), Error> {
    native.define_module_function("created_at_ns", function!(created_at_ns, 0))?;
    native.define_module_function("instance_id", function!(instance_id, 0))?;
    Ok(())
}
