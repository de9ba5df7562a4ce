//! Structured values under allowlisted keys: how far they are copied, the
//! markers that cut them, and the part of the filter rule that is decided
//! natively.
//!
//! The binding walks a Hash or Array value into an [`AttrValue`] tree
//! (`AttrValue::Map` / `AttrValue::Array`) before any lock is taken, never
//! through Ruby's `to_s`/`inspect` of a container, and with these bounds:
//!
//! - depth: the value itself is level 1; a Hash or Array at a level deeper
//!   than [`MAX_VALUE_DEPTH`] is stored as [`DEPTH_MARKER`], and one that
//!   contains itself (the repeated occurrence) as [`CYCLE_MARKER`];
//! - size: at most [`MAX_VALUE_NODES`] values (keys not counted) and
//!   [`MAX_VALUE_BYTES`] bytes of text (keys and values) per attribute value,
//!   and at most [`MAX_ARRAY_ITEMS`] entries per Array or Hash. What does not
//!   fit is left out and marked: an Array ends with the String
//!   [`TRUNCATED_MARKER`], a Hash with the pair
//!   `TRUNCATED_MARKER => <number of pairs left out>`.
//!
//! # Filtering
//!
//! Every nested key is filtered as Rails' `ActiveSupport::ParameterFilter`
//! filters it, with the path of a key being the dotted keys from the
//! allowlisted one down (`"order.customer.password"`; Array elements add no
//! step): a String or Symbol filter matches a key it is a case-insensitive
//! substring of, or, when it contains a dot, a path it is a case-insensitive
//! substring of. A matched key's value is exported as `"[FILTERED]"`
//! whatever it is. [`ValueFilter`] decides that part; Regexp and Proc filters
//! are decided by the Ruby layer, once per path (see the binding).
//!
//! [`AttrValue`]: super::AttrValue
//! [`MAX_ARRAY_ITEMS`]: super::MAX_ARRAY_ITEMS

/// Deepest container level copied (the allowlisted value is level 1).
pub const MAX_VALUE_DEPTH: usize = 32;
/// Most values copied per attribute value, containers included.
pub const MAX_VALUE_NODES: usize = 1024;
/// Most bytes of text copied per attribute value, keys included.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Stored in place of a Hash or Array deeper than [`MAX_VALUE_DEPTH`].
pub const DEPTH_MARKER: &str = "[depth limit]";
/// Stored in place of a Hash or Array inside itself.
pub const CYCLE_MARKER: &str = "[...]";
/// Ends a container whose remaining entries were left out.
pub const TRUNCATED_MARKER: &str = "[truncated]";

/// The String and Symbol filters in force, as Rails compiles them: those
/// with a dot match paths, the others keys, both case-insensitively as
/// substrings. `asks` tells whether Regexp or Proc filters are in force too
/// (decided elsewhere).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValueFilter {
    keys: Box<[String]>,
    paths: Box<[String]>,
    asks: bool,
}

impl ValueFilter {
    pub fn new<S: AsRef<str>>(strings: impl IntoIterator<Item = S>, asks: bool) -> ValueFilter {
        let (paths, keys): (Vec<String>, Vec<String>) = strings
            .into_iter()
            .map(|s| caseless::default_case_fold_str(s.as_ref()))
            .partition(|s| s.contains('.'));
        ValueFilter {
            keys: keys.into(),
            paths: paths.into(),
            asks,
        }
    }

    /// No filter at all: nested keys are kept as they are.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.paths.is_empty() && !self.asks
    }

    /// Regexp or Proc filters are in force: keys these filters do not match
    /// must still be decided by them.
    pub fn asks(&self) -> bool {
        self.asks
    }

    /// Whether the String filters need the dotted path at all.
    pub fn uses_paths(&self) -> bool {
        !self.paths.is_empty()
    }

    /// Whether a String filter matches `key`, whose dotted path is `path`.
    pub fn matches(&self, key: &str, path: &str) -> bool {
        self.keys.iter().any(|f| contains_ignore_case(key, f))
            || self.paths.iter().any(|f| contains_ignore_case(path, f))
    }
}

/// Whether `needle` (already case-folded) is a substring of `hay` ignoring
/// case, with Unicode's full case folding, as Ruby's case-insensitive
/// Regexps match (a Rails filter "password" matches "PASSWORD", "paßword"
/// and "paſſword").
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if hay.is_ascii() && needle.is_ascii() {
        let needle = needle.as_bytes();
        return hay
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle));
    }
    caseless::default_case_fold_str(hay).contains(needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_match_keys_and_dotted_strings_match_paths() {
        let f = ValueFilter::new(["PassWord", "token", "order.customer.card"], false);
        assert!(f.matches("password", "order.customer.password"));
        assert!(f.matches("user_PASSWORD_hash", "x.user_PASSWORD_hash"));
        assert!(f.matches("api_token", "api_token"));
        assert!(!f.matches("card", "order.billing.card"));
        assert!(f.matches("card", "order.customer.card"));
        // As a Rails filter does: a substring of the path, in any case.
        assert!(f.matches("cards", "Order.Customer.Cards"));
        assert!(!f.matches("name", "order.customer.name"));
        assert!(!f.is_empty());
        // Unicode's full case folding, as Ruby's /i: the long s, sharp s.
        for key in ["paſſword", "paßword", "ſecret_tokeN"] {
            assert!(f.matches(key, key), "{key}");
        }
        let folded = ValueFilter::new(["password", "secret", "ssn", "STRASSE"], false);
        for key in ["paſſword", "paßword", "ſecret", "ſſn", "straße", "Straße"] {
            assert!(folded.matches(key, key), "{key}");
        }
        assert!(!folded.matches("pasword", "pasword"));
        assert!(f.uses_paths());
        assert!(!f.asks());
    }

    #[test]
    fn no_filters_match_nothing_and_an_empty_string_matches_everything() {
        let none = ValueFilter::new(Vec::<String>::new(), false);
        assert!(none.is_empty());
        assert!(!none.matches("password", "password"));
        assert!(!ValueFilter::new(Vec::<String>::new(), true).is_empty());
        assert!(ValueFilter::new([""], false).matches("anything", "a.anything"));
    }

    #[test]
    fn non_ascii_keys_match_case_insensitively() {
        let f = ValueFilter::new(["GEHEIMNIS", "ÄRGER"], false);
        assert!(f.matches("mein_geheimnis", "mein_geheimnis"));
        assert!(f.matches("großer_ärger", "großer_ärger"));
        assert!(!f.matches("ärmel", "ärmel"));
    }
}
