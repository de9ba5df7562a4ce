//! The process-wide table of numbered Symbol names: packed payloads refer to
//! a Symbol by number instead of repeating its name.

use std::collections::HashMap;
use std::sync::{Arc, Once, OnceLock};

use super::Str;
use crate::support::fork::ForkSafeMutex;

/// Symbol names that payloads refer to by number: at most this many are
/// numbered; later names are stored in full.
pub const MAX_NUMBERED_SYMBOLS: usize = 16_384;

/// Numbered names are kept in chunks of this many, made on first use.
const SYMBOL_CHUNK: usize = 256;

type NameSlots = Box<[OnceLock<Arc<Str>>]>;

/// The process-wide table of numbered Symbol names. Names are only ever added,
/// and a number once given never changes, so readers need no lock: each slot
/// is set once, before its number is handed out.
struct SymbolTable {
    ids: ForkSafeMutex<HashMap<Arc<Str>, u32>>,
    chunks: Box<[OnceLock<NameSlots>]>,
}

fn symbol_table() -> &'static SymbolTable {
    static TABLE: OnceLock<SymbolTable> = OnceLock::new();
    let table = TABLE.get_or_init(|| SymbolTable {
        ids: ForkSafeMutex::new(HashMap::new()),
        chunks: (0..MAX_NUMBERED_SYMBOLS / SYMBOL_CHUNK)
            .map(|_| OnceLock::new())
            .collect(),
    });
    // Chunks are created and slots set only under `ids`, so holding it over
    // a fork also keeps every OnceLock here whole.
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        table.ids.register();
    });
    table
}

fn name_slot(id: usize, create: bool) -> Option<&'static OnceLock<Arc<Str>>> {
    let chunk = symbol_table().chunks.get(id / SYMBOL_CHUNK)?;
    let slots = if create {
        chunk.get_or_init(|| (0..SYMBOL_CHUNK).map(|_| OnceLock::new()).collect())
    } else {
        chunk.get()?
    };
    slots.get(id % SYMBOL_CHUNK)
}

/// The number of a Symbol name, numbering it on first sight; `None` once the
/// table is full (the name is then stored in full wherever it occurs).
pub fn symbol_id(name: &Str) -> Option<u32> {
    let mut ids = symbol_table().ids.lock();
    if let Some(&id) = ids.get(name) {
        return Some(id);
    }
    let id = ids.len();
    let slot = name_slot(id, true)?;
    let name = Arc::new(name.clone());
    let _ = slot.set(name.clone());
    ids.insert(name, id as u32);
    Some(id as u32)
}

/// The name a Symbol number stands for.
pub fn symbol_name(id: u32) -> Option<&'static Arc<Str>> {
    name_slot(id as usize, false)?.get()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Encoding, Packed, Value};

    #[test]
    fn symbols_are_numbered_once() {
        let a = symbol_id(&Str::utf8("numbered_once")).unwrap();
        let b = symbol_id(&Str::utf8("numbered_once")).unwrap();
        assert_eq!(a, b);
        assert_eq!(symbol_name(a).unwrap().bytes(), b"numbered_once");
        // Same bytes, other encoding: another Symbol.
        let c = symbol_id(&Str::new(b"numbered_once".to_vec(), Encoding::Binary)).unwrap();
        assert_ne!(a, c);
        assert_eq!(symbol_name(u32::MAX), None);
        // Symbols numbered beyond the one-byte range round trip too.
        let many: Vec<Value> = (0..300)
            .map(|i| Value::symbol(&format!("many_{i}")))
            .collect();
        let v = Value::Array(many);
        assert_eq!(Packed::from_value(&v).to_value(), v);
    }
}
