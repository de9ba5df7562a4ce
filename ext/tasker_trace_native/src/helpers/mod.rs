//! What every other folder uses: the global allocator, running Rust without
//! the GVL, errors and panic guards at the Ruby boundary, the static Symbol
//! ids and encoding indexes, and how a recorder's work ends.

pub mod allocator;
pub mod errors;
pub mod gvl;
pub mod recorder;
pub mod static_ids;
