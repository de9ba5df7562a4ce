//! Reading environment variable values, the same way for every component:
//! blank counts as unset, `key=value` lists with percent-encoding, and the
//! [`Warning`] a value that cannot be used gives. Nothing here reads the
//! process environment; each component names its own variables.

/// Something to say about a variable's value: either it was not used (the
/// binding reports it once and goes on as if the variable were unset), or
/// it was used as the specification says but likely not as meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub variable: &'static str,
    pub message: String,
    /// The value was ignored (`<variable> ignored: <message>`); otherwise
    /// it is in force and `message` says all.
    pub ignored: bool,
}

impl Warning {
    /// A value that cannot be used, ignored as if unset.
    pub fn ignored(variable: &'static str, message: impl Into<String>) -> Warning {
        Warning {
            variable,
            message: message.into(),
            ignored: true,
        }
    }

    /// A value used as it is, with a word about it (the whole message).
    pub fn used(variable: &'static str, message: impl Into<String>) -> Warning {
        Warning {
            variable,
            message: message.into(),
            ignored: false,
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ignored {
            write!(f, "{} ignored: {}", self.variable, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

/// An empty or blank variable counts as unset, as OpenTelemetry SDKs treat it.
pub fn set(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes; the result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_digit);
            let lo = bytes.get(i + 2).copied().and_then(hex_digit);
            match (hi, lo) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => return Err(format!("bad percent-escape in {s:?}")),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// Parses `key1=value1,key2=value2` (the format of `OTEL_RESOURCE_ATTRIBUTES`
/// and `OTEL_EXPORTER_OTLP_HEADERS`): entries are trimmed, empty entries are
/// skipped, keys and values are percent-decoded, and a value may contain `=`.
/// Any malformed entry makes the whole value an error, as the specification
/// asks (a half-applied set of headers or attributes would mislead).
pub fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    key_values(s, true)
}

/// [`parse_key_values`] for values that are credentials (the headers
/// variables): a message names an entry by its position, and its key when
/// that was read, and never quotes a value.
pub fn parse_secret_key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    key_values(s, false)
}

fn key_values(s: &str, quote: bool) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut n = 0;
    for entry in s.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        n += 1;
        let shown = if quote {
            format!("{entry:?}")
        } else {
            format!("number {n}")
        };
        let Some((k, v)) = entry.split_once('=') else {
            return Err(format!("entry {shown} has no '='"));
        };
        let key = percent_decode(k.trim()).map_err(|e| {
            if quote {
                e
            } else {
                format!("the key of entry {shown}: not decoded")
            }
        })?;
        if key.is_empty() {
            return Err(format!("entry {shown} has an empty key"));
        }
        let value = percent_decode(v.trim()).map_err(|e| {
            if quote {
                e
            } else {
                format!("the value of entry {shown} ({key:?}): not decoded (a bad percent-escape, or not UTF-8)")
            }
        })?;
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_key_values_never_quote_a_value_in_an_error() {
        for bad in [
            "authorization:Bearer s3cret",
            "a=1, authorization=Bearer%zzs3cret",
            "authorization=Bearer%FFs3cret",
            "=s3cret",
        ] {
            let error = parse_secret_key_values(bad).unwrap_err();
            assert!(!error.contains("s3cret"), "{bad:?}: {error}");
            assert!(error.contains("entry number"), "{bad:?}: {error}");
            // The quoting form (resource attributes) still shows the entry.
            assert!(
                parse_key_values(bad).unwrap_err().contains("s3cret"),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_secret_key_values("a=1,b=x%20y").unwrap(),
            parse_key_values("a=1,b=x%20y").unwrap()
        );
    }

    #[test]
    fn key_values_are_trimmed_and_percent_decoded() {
        assert_eq!(
            parse_key_values(" a=1 , b = x%20y ,,c=k=v").unwrap(),
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "x y".to_string()),
                ("c".to_string(), "k=v".to_string()),
            ]
        );
        assert!(parse_key_values("a=1,b").is_err());
        assert!(parse_key_values("=1").is_err());
        assert!(parse_key_values("a=%zz").is_err());
        assert!(parse_key_values("a=%ff").is_err());
        assert_eq!(parse_key_values("").unwrap(), vec![]);
    }
}
