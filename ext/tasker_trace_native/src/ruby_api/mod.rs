//! The methods Ruby sees, one file per Ruby module:
//!
//! - [`backend_methods`]: `TaskerTraceNative::BackendMethods`, the instance
//!   methods of `Tasker::Telemetry::TraceBackend`
//! - [`native`]: `TaskerTraceNative::Native`, the module functions the Ruby
//!   layer wraps, one file per area
//! - [`test_hooks`]: `TaskerTraceNative::TestHooks`, defined only on request
//!
//! Method files never import each other: what they share is in
//! [`crate::process`], [`crate::helpers`], [`crate::from_ruby`] and
//! [`crate::to_ruby`].

pub mod backend_methods;
pub mod native;
pub mod test_hooks;
