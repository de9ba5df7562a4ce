//! The owned value model a payload is copied into.
//!
//! A payload arrives as a Ruby object graph; the binding crate walks it once
//! and writes it straight into a [`Packed`] buffer that owns all its data.
//! Nothing here refers to Ruby memory, so a stored trace survives GC,
//! compaction and fork without marking.
//!
//! - [`string`]: [`Str`], bytes with their [`Encoding`] label
//! - [`tree`]: [`Value`], the owned value tree (settings, tests, conversions)
//! - [`symbols`]: the numbered Symbol names packed payloads refer to
//! - [`packed`]: [`Packed`] payloads, their writer and reader

pub mod packed;
pub mod string;
pub mod symbols;
pub mod tree;

pub use packed::{ContainerMark, Item, Packed, PackedReader, PackedWriter};
pub use string::{Encoding, Str};
pub use symbols::{symbol_id, symbol_name, MAX_NUMBERED_SYMBOLS};
pub use tree::{Sym, Value};

/// Deepest container nesting that is copied. The payload Hash itself is level 1;
/// a Hash or Array found at a deeper level is stored as [`DEPTH_LIMIT_MARKER`].
pub const MAX_DEPTH: usize = 128;
/// Stored in place of a Hash or Array nested deeper than [`MAX_DEPTH`].
pub const DEPTH_LIMIT_MARKER: &str = "[depth limit]";
/// Stored in place of a Hash or Array that contains itself (the repeated occurrence).
pub const RECURSION_MARKER: &str = "[...]";
