//! Reading packed payloads as OTLP values, the same way for every wire
//! format. The payload buffer is read once, in order, while an encoder
//! writes; no value tree is built. These modules decide WHAT a value becomes;
//! `json` and `protobuf` only decide how to write it.
//!
//! - Hash → `kvlistValue`, Array → `arrayValue`
//! - Integer → `intValue`; beyond 64 bits → `stringValue` (its digits)
//! - Float → `doubleValue`; NaN and ±Infinity → `stringValue`
//! - Symbol → `stringValue`; nil → an AnyValue with nothing set
//! - String → `stringValue`, or `bytesValue` when it is not UTF-8
//! - containers [`MAX_DEPTH`] deep → the `stringValue` [`DEPTH_LIMIT_MARKER`]
//! - keys are unique in each list: the first of a key wins, the others are
//!   dropped (and counted in attribute lists)
//! - text that must be a string (names, keys, symbols) is made valid UTF-8,
//!   invalid sequences replaced by U+FFFD

//! - [`text`]: text as valid UTF-8, renderings as text
//! - [`fields`]: a payload's fields looked up
//! - [`keys`]: keys' text, keys seen
//! - [`values`]: one value streamed as an AnyValue
//! - [`attributes`]: a span's attribute lists

pub mod attributes;
pub mod fields;
pub mod keys;
pub mod text;
pub mod values;

pub(crate) use attributes::{AttributeEntries, EntryValue};
pub use attributes::{PayloadAttributes, ATTRIBUTE_PREFIX};
pub use fields::error_message;
pub(crate) use fields::field;
pub(crate) use keys::SeenKeys;
pub(crate) use text::Lossy;
pub use text::{render_text, str_text};
pub(crate) use values::{double_item, AnyItem, ValueReader};
