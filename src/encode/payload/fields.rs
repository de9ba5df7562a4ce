//! Looking a payload's top-level fields up: one field's value, the error
//! message of a failure.

use super::text::render_text;
use crate::value::{Item, Packed, Value};

/// Looks a top-level field up by Symbol, else by String key (payloads with
/// indifferent access arrive with String keys). nil counts as absent.
pub fn field(payload: &Packed, name: &str) -> Option<Value> {
    let name = name.as_bytes();
    let mut r = payload.reader();
    let Some(Item::Hash(n)) = r.next() else {
        return None;
    };
    let mut by_string: Option<Value> = None;
    for _ in 0..n {
        let k = r.next()?;
        let (symbol, matches) = match k {
            Item::Sym(b, _) => (true, b == name),
            Item::SymId(_, s) => (true, s.bytes() == name),
            Item::Str(b, _) => (false, b == name),
            other => {
                r.skip_elements(&other);
                (false, false)
            }
        };
        let v = r.next()?;
        if matches && !matches!(v, Item::Nil) && (symbol || by_string.is_none()) {
            let value = r.read_value(v, 2);
            if symbol {
                return Some(value);
            }
            by_string = Some(value);
        } else {
            r.skip_elements(&v);
        }
    }
    by_string
}

/// The ERROR status message: the payload's `:error`, else `:error_message`.
pub fn error_message(payload: &Packed) -> Option<String> {
    let v = field(payload, "error")
        .filter(Value::is_truthy)
        .or_else(|| field(payload, "error_message").filter(Value::is_truthy))?;
    let mut s = String::new();
    render_text(&v, &mut s);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_by_symbol_then_string_key() {
        let p = Packed::from_value(&Value::Hash(vec![
            (Value::string("error"), Value::string("by string")),
            (Value::Array(vec![Value::Int(1)]), Value::Hash(vec![])),
            (Value::symbol("error"), Value::string("by symbol")),
        ]));
        assert_eq!(field(&p, "error"), Some(Value::string("by symbol")));
        let p = Packed::from_value(&Value::Hash(vec![
            (Value::symbol("error"), Value::Nil),
            (Value::string("error"), Value::string("by string")),
        ]));
        assert_eq!(field(&p, "error"), Some(Value::string("by string")));
        assert_eq!(field(&p, "missing"), None);
        assert_eq!(field(&Packed::from_value(&Value::Int(1)), "error"), None);
    }
    #[test]
    fn error_messages_come_from_error_then_error_message() {
        let p = |pairs| Packed::from_value(&Value::Hash(pairs));
        assert_eq!(
            error_message(&p(vec![
                (Value::symbol("error_message"), Value::string("second")),
                (Value::symbol("error"), Value::string("first")),
            ]))
            .as_deref(),
            Some("first")
        );
        assert_eq!(
            error_message(&p(vec![
                (Value::symbol("error"), Value::Bool(false)),
                (
                    Value::string("error_message"),
                    Value::string("by string key")
                ),
            ]))
            .as_deref(),
            Some("by string key")
        );
        assert_eq!(
            error_message(&p(vec![(
                Value::symbol("error"),
                Value::Hash(vec![(Value::symbol("code"), Value::Int(5))]),
            )]))
            .as_deref(),
            Some("{:code=>5}")
        );
        assert_eq!(error_message(&p(vec![])), None);
    }
}
