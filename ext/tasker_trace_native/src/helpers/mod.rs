//! What every other folder uses: the global allocator, running Rust without
//! the GVL, errors and panic guards at the Ruby boundary, the static Symbol
//! ids and encoding indexes, the events waiting to be read, how a
//! recorder's work ends, the delivery of warnings about settings to
//! Ruby, and the publishing thread's token.

pub mod allocator;
pub mod errors;
pub mod gvl;
pub mod pending;
pub mod recorder;
pub mod static_ids;
pub mod thread_token;
pub mod warnings;
