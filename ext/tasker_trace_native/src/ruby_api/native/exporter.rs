//! The background exporter from Ruby: `Native.exporter_flush`,
//! `Native.exporter_shutdown`, `Native.exporter_stats` and
//! `Native.exporter_enabled?`, `Native.take_announcements` (the Ruby layer defines
//! `TaskerTraceNative.flush`, `.shutdown` and `.exporter_stats` on them).
//! The exporter itself, its target and the hook every recording path stores
//! its events through are in [`crate::process`].

use magnus::rb_sys::AsRawValue;
use magnus::{function, Error, RModule, Ruby, Value as RValue};
use rb_sys::VALUE;
use tasker_trace_core::encode::limits;
use tasker_trace_core::export::{Exporter, ExporterStats, FlushResult, Wait};

use super::lifecycle::read_pending;
use crate::from_ruby::setting_checks::{seconds, TIMEOUT};
use crate::helpers::errors::guarded;
use crate::helpers::gvl::without_gvl;
use crate::helpers::static_ids::sym;
use crate::in_force;
use crate::process::{self, exporter};
use crate::to_ruby::values::{
    bool_to_ruby, count_to_ruby, hash_from_pairs, int_to_ruby, nil, utf8_to_ruby, wrap,
};

/// `{sent:, failed:, error:}`.
fn flush_result(r: &FlushResult) -> RValue {
    let kv = [
        sym(|s| s.sent),
        count_to_ruby(r.sent),
        sym(|s| s.failed),
        count_to_ruby(r.failed),
        sym(|s| s.error),
        r.error.as_deref().map_or_else(nil, utf8_to_ruby),
    ];
    wrap(hash_from_pairs(&kv))
}

/// Flush or shutdown: starts the worker if it should run (with the GVL: the
/// target reads the environment), then waits with the GVL released; an
/// interrupt ends the wait at once and is raised.
fn wait_for_export(
    ruby: &Ruby,
    timeout: RValue,
    what: &str,
    call: fn(&Exporter, std::time::Duration, &Wait) -> FlushResult,
) -> Result<RValue, Error> {
    let timeout = seconds(ruby, "timeout", timeout, &TIMEOUT)?;
    in_force::ensure_environment(ruby)?;
    let e = exporter();
    guarded(ruby, || {
        e.ensure_running();
        Ok(())
    })?;
    let wait = Wait::default();
    let unblock = || e.interrupt(&wait);
    let done = without_gvl(|| call(e, timeout, &wait), Some(&unblock));
    let (result, interrupt) = done.finished(ruby, what)?;
    if let Some(interrupt) = interrupt {
        return Err(interrupt);
    }
    Ok(flush_result(&result))
}

/// `Native.exporter_flush(timeout)` → `{sent:, failed:, error:}`.
fn exporter_flush(ruby: &Ruby, timeout: RValue) -> Result<RValue, Error> {
    read_pending(ruby)?;
    wait_for_export(ruby, timeout, "flush", Exporter::flush)
}

/// `Native.exporter_shutdown(timeout)` → `{sent:, failed:, error:}`.
fn exporter_shutdown(ruby: &Ruby, timeout: RValue) -> Result<RValue, Error> {
    read_pending(ruby)?;
    wait_for_export(ruby, timeout, "shutdown", Exporter::shutdown)
}

/// `Native.exporter_enabled?`: the settings turn the exporter on.
fn exporter_enabled(ruby: &Ruby) -> Result<bool, Error> {
    guarded(ruby, || Ok(exporter().config().is_on()))
}

/// `Native.unowned_before` → an Integer (monotonic nanoseconds) or nil:
/// what finished at or before it is not this process's to export (a fork
/// child's copies of its parent's). Read by `Process.daemon` before it
/// forks, for `adopt_inherited`.
fn unowned_before(ruby: &Ruby) -> Result<Option<u64>, Error> {
    guarded(ruby, || Ok(exporter().unowned_before()))
}

/// `Native.adopt_inherited(before)`: in a process `Process.daemon` made,
/// what finished before it is this process's to export (the parent exited
/// at once, without exporting), not removed as a fork child's copy, except
/// what finished at or before `before` (nil, or what `unowned_before` said
/// in the parent: its own parent's).
fn adopt_inherited(ruby: &Ruby, before: Option<u64>) -> Result<bool, Error> {
    guarded(ruby, || {
        exporter().adopt_inherited(before);
        Ok(true)
    })
}

fn strings_to_ruby(ruby: &Ruby, items: &[String]) -> Result<VALUE, Error> {
    let array = ruby.ary_new_capa(items.len());
    for item in items {
        array.push(wrap(utf8_to_ruby(item)))?;
    }
    Ok(array.as_raw())
}

/// `Native.exporter_stats` → the counters, with `last_error_at_ns` and
/// `next_attempt_at_ns` (the Ruby layer makes them Times).
fn exporter_stats(ruby: &Ruby) -> Result<RValue, Error> {
    read_pending(ruby)?;
    // Before this process's first use, whether the settings as the
    // environment makes them now turn the exporter on.
    let enabled_now = if process::environment_read() {
        None
    } else {
        Some(in_force::current().exporter.is_on())
    };
    guarded(ruby, || {
        let ExporterStats {
            enabled,
            running,
            pid,
            exports,
            failed_exports,
            exported_traces,
            exported_spans,
            retries,
            rejected_traces,
            rejected_spans,
            dropped_traces,
            queued,
            inherited_discarded,
            last_error,
            warnings: _,
            sampled_out,
            kept_spans,
            next_attempt_at_ns,
        } = exporter().stats();
        let warnings = strings_to_ruby(ruby, &process::warnings().given())?;
        let cut = limits::own_cuts();
        let cut_kv = [
            sym(|s| s.attribute_values),
            count_to_ruby(cut.attribute_value_length),
            sym(|s| s.span_attributes),
            count_to_ruby(cut.span_attributes),
            sym(|s| s.span_events),
            count_to_ruby(cut.span_events),
            sym(|s| s.span_links),
            count_to_ruby(cut.span_links),
            sym(|s| s.event_attributes),
            count_to_ruby(cut.event_attributes),
            sym(|s| s.link_attributes),
            count_to_ruby(cut.link_attributes),
        ];
        let limit_cuts = hash_from_pairs(&cut_kv);
        let kv = [
            sym(|s| s.enabled),
            bool_to_ruby(enabled_now.unwrap_or(enabled)),
            sym(|s| s.running),
            bool_to_ruby(running),
            sym(|s| s.pid),
            count_to_ruby(pid),
            sym(|s| s.exports),
            count_to_ruby(exports),
            sym(|s| s.failed_exports),
            count_to_ruby(failed_exports),
            sym(|s| s.exported_traces),
            count_to_ruby(exported_traces),
            sym(|s| s.exported_spans),
            count_to_ruby(exported_spans),
            sym(|s| s.retries),
            count_to_ruby(retries),
            sym(|s| s.rejected_traces),
            count_to_ruby(rejected_traces),
            sym(|s| s.rejected_spans),
            count_to_ruby(rejected_spans),
            sym(|s| s.dropped_traces),
            count_to_ruby(dropped_traces),
            sym(|s| s.queued),
            count_to_ruby(queued),
            sym(|s| s.inherited_discarded),
            count_to_ruby(inherited_discarded),
            sym(|s| s.sampled_out),
            count_to_ruby(sampled_out),
            sym(|s| s.kept_error_spans),
            count_to_ruby(kept_spans.errors),
            sym(|s| s.kept_slow_spans),
            count_to_ruby(kept_spans.slow),
            sym(|s| s.kept_retried_spans),
            count_to_ruby(kept_spans.retried),
            sym(|s| s.last_error),
            last_error
                .as_ref()
                .map_or_else(nil, |e| utf8_to_ruby(&e.message)),
            sym(|s| s.last_error_at_ns),
            last_error
                .as_ref()
                .map_or_else(nil, |e| int_to_ruby(e.at_wall_ns)),
            sym(|s| s.next_attempt_at_ns),
            next_attempt_at_ns.map_or_else(nil, int_to_ruby),
            sym(|s| s.warnings),
            warnings,
            sym(|s| s.limit_cuts),
            limit_cuts,
        ];
        Ok(wrap(hash_from_pairs(&kv)))
    })
}

/// `Native.take_announcements` → the exporter's warning lines waiting
/// (drops, failing exports, recovery), oldest first; each is handed out once.
fn take_announcements(ruby: &Ruby) -> Result<RValue, Error> {
    let lines = guarded(ruby, || Ok(exporter().announcer().take_lines()))?;
    Ok(wrap(strings_to_ruby(ruby, &lines)?))
}

pub fn define(native: RModule) -> Result<(), Error> {
    native.define_module_function("take_announcements", function!(take_announcements, 0))?;
    native.define_module_function("exporter_flush", function!(exporter_flush, 1))?;
    native.define_module_function("exporter_shutdown", function!(exporter_shutdown, 1))?;
    native.define_module_function("exporter_stats", function!(exporter_stats, 0))?;
    native.define_module_function("exporter_enabled?", function!(exporter_enabled, 0))?;
    native.define_module_function("unowned_before", function!(unowned_before, 0))?;
    native.define_module_function("adopt_inherited", function!(adopt_inherited, 1))?;
    Ok(())
}
