//! The value tree: an owned payload value, for callers that inspect or build
//! payloads piece by piece (settings, tests). Stored payloads are packed
//! ([`super::packed`]); a tree converts to and from the packed form.

use std::sync::Arc;

use super::{Str, DEPTH_LIMIT_MARKER, RECURSION_MARKER};

/// A Symbol's name. Symbols repeat across payloads, so they are shared.
pub type Sym = Arc<Str>;

/// One payload value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    /// An Integer that does not fit in 64 bits, as its decimal digits (with sign).
    BigInt(Box<str>),
    Float(f64),
    Str(Str),
    Sym(Sym),
    Array(Vec<Value>),
    /// Key/value pairs in insertion order; keys are any values.
    Hash(Vec<(Value, Value)>),
}

impl Value {
    /// A UTF-8 String value.
    pub fn string(s: &str) -> Value {
        Value::Str(Str::utf8(s))
    }

    /// A Symbol value.
    pub fn symbol(s: &str) -> Value {
        Value::Sym(Arc::new(Str::utf8(s)))
    }

    /// The marker stored for a container that contains itself.
    pub fn recursion_marker() -> Value {
        Value::string(RECURSION_MARKER)
    }

    /// The marker stored for a container nested deeper than [`super::MAX_DEPTH`].
    pub fn depth_limit_marker() -> Value {
        Value::string(DEPTH_LIMIT_MARKER)
    }

    /// Ruby truthiness: everything but nil and false.
    pub fn is_truthy(&self) -> bool {
        !matches!(self, Value::Nil | Value::Bool(false))
    }

    /// Looks up a Symbol key in a Hash value (first match in insertion order).
    pub fn get_symbol_key(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Hash(pairs) => pairs.iter().find_map(|(k, v)| match k {
                Value::Sym(s) if s.bytes() == name.as_bytes() => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Approximate heap bytes owned by this value, for reporting memory to a GC.
    /// Iterative, so arbitrarily nested trees cannot exhaust the stack.
    pub fn heap_size(&self) -> usize {
        let mut total = 0usize;
        let mut stack: Vec<&Value> = vec![self];
        while let Some(v) = stack.pop() {
            match v {
                Value::BigInt(digits) => total += digits.len(),
                Value::Str(s) => total += s.heap_size(),
                Value::Array(items) => {
                    total += items.capacity() * std::mem::size_of::<Value>();
                    stack.extend(items.iter());
                }
                Value::Hash(pairs) => {
                    total += pairs.capacity() * std::mem::size_of::<(Value, Value)>();
                    for (k, val) in pairs {
                        stack.push(k);
                        stack.push(val);
                    }
                }
                _ => {}
            }
        }
        total
    }

    /// Nesting depth of containers (a scalar is 0, an empty Hash is 1).
    pub fn depth(&self) -> usize {
        let mut max = 0usize;
        let mut stack: Vec<(&Value, usize)> = vec![(self, 0)];
        while let Some((v, d)) = stack.pop() {
            match v {
                Value::Array(items) => {
                    max = max.max(d + 1);
                    stack.extend(items.iter().map(|i| (i, d + 1)));
                }
                Value::Hash(pairs) => {
                    max = max.max(d + 1);
                    for (k, val) in pairs {
                        stack.push((k, d + 1));
                        stack.push((val, d + 1));
                    }
                }
                _ => {}
            }
        }
        max
    }
}

impl Drop for Value {
    // The default recursive drop is bounded by MAX_DEPTH for values built by the
    // binding, but a Value built elsewhere may be deeper: flatten so that no
    // tree can overflow the stack when it is freed.
    fn drop(&mut self) {
        let mut pending: Vec<Value> = match self {
            Value::Array(items) if items.iter().any(Value::is_container) => std::mem::take(items),
            Value::Hash(pairs)
                if pairs
                    .iter()
                    .any(|(k, v)| k.is_container() || v.is_container()) =>
            {
                std::mem::take(pairs)
                    .into_iter()
                    .flat_map(|(k, v)| [k, v])
                    .collect()
            }
            _ => return,
        };
        while let Some(mut v) = pending.pop() {
            match &mut v {
                Value::Array(items) => pending.append(items),
                Value::Hash(pairs) => {
                    for (k, val) in std::mem::take(pairs) {
                        pending.push(k);
                        pending.push(val);
                    }
                }
                _ => {}
            }
        }
    }
}

impl Value {
    fn is_container(&self) -> bool {
        matches!(self, Value::Array(_) | Value::Hash(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_follows_ruby() {
        assert!(!Value::Nil.is_truthy());
        assert!(!Value::Bool(false).is_truthy());
        assert!(Value::Bool(true).is_truthy());
        assert!(Value::Int(0).is_truthy());
        assert!(Value::string("").is_truthy());
    }

    #[test]
    fn symbol_lookup_ignores_string_keys() {
        let h = Value::Hash(vec![
            (Value::string("task_id"), Value::Int(1)),
            (Value::symbol("task_id"), Value::Int(2)),
        ]);
        assert_eq!(h.get_symbol_key("task_id"), Some(&Value::Int(2)));
        assert_eq!(h.get_symbol_key("missing"), None);
        assert_eq!(Value::Int(1).get_symbol_key("task_id"), None);
    }

    #[test]
    fn very_deep_values_drop_and_measure_without_overflow() {
        let mut v = Value::Nil;
        for _ in 0..200_000 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(v.depth(), 200_000);
        assert!(v.heap_size() > 0);
        drop(v);
        let mut h = Value::Nil;
        for _ in 0..200_000 {
            h = Value::Hash(vec![(Value::Int(1), h)]);
        }
        drop(h);
    }

    #[test]
    fn heap_size_counts_strings_and_containers() {
        let v = Value::Hash(vec![(Value::symbol("a"), Value::string("hello"))]);
        assert!(v.heap_size() >= 5 + std::mem::size_of::<(Value, Value)>());
    }
}
