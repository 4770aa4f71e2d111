//! Checks an unknown key's raw JSON value before it goes into `extra` (jsonb) verbatim.
//!
//! The value's text is kept exactly as received (number spelling, key order, escapes), so
//! jsonb stores what the device sent. The check enforces what PostgreSQL or our limits would
//! refuse: nesting deeper than `max_depth`, strings or keys longer than `max_string_bytes`,
//! U+0000 in a string, duplicate keys in an object, numbers beyond f64 range.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::reject::{quoted, Fault, RejectCode};
use crate::value::json_type;

/// Limits an `extra` value must respect.
#[derive(Clone, Copy)]
pub struct ExtraLimits {
    pub max_depth: usize,
    pub max_string_bytes: usize,
}

/// The JSON type of a raw value, read from its first byte.
pub fn raw_json_type(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => json_type::OBJECT,
        Some(b'[') => json_type::ARRAY,
        Some(b'"') => json_type::STRING,
        Some(b't' | b'f') => json_type::BOOLEAN,
        Some(b'n') => json_type::NULL,
        _ => json_type::NUMBER,
    }
}

/// Checks the already syntax-checked JSON text `raw`, the value of unknown key `key`.
pub fn check(key: &str, raw: &str, limits: ExtraLimits) -> Result<(), Fault> {
    // Most extra values are scalars without escapes: skip the second parse for them.
    if is_plain_scalar(raw, limits.max_string_bytes) {
        return Ok(());
    }
    let fault = RefCell::new(None);
    let seed = Check {
        depth: 0,
        limits,
        fault: &fault,
    };
    let mut de = serde_json::Deserializer::from_str(raw);
    match seed.deserialize(&mut de) {
        Ok(()) => Ok(()),
        Err(err) => Err(match fault.into_inner() {
            Some((code, what)) => Fault::new(code, format!("key {}: {what}", quoted(key))),
            None if err.to_string().contains("out of range") => Fault::new(
                RejectCode::NonFinite,
                format!("key {}: number out of range", quoted(key)),
            ),
            None => Fault::new(
                RejectCode::InvalidJson,
                format!("key {}: {err}", quoted(key)),
            ),
        }),
    }
}

/// True for `true`, `false`, `null`, a string without escapes within the length limit,
/// and an integer or a number with at most 17 significant characters and no exponent
/// (cannot overflow f64).
fn is_plain_scalar(raw: &str, max_string_bytes: usize) -> bool {
    let b = raw.as_bytes();
    match b.first() {
        Some(b't' | b'f' | b'n') => true,
        Some(b'"') => b.len() - 2 <= max_string_bytes && !raw.contains('\\'),
        Some(b'-' | b'0'..=b'9') => b.len() <= 24 && !b.iter().any(|&c| c == b'e' || c == b'E'),
        _ => false,
    }
}

type Cell<'f> = &'f RefCell<Option<(RejectCode, String)>>;

#[derive(Clone, Copy)]
struct Check<'f> {
    depth: usize,
    limits: ExtraLimits,
    fault: Cell<'f>,
}

impl Check<'_> {
    fn fail<E: de::Error>(&self, code: RejectCode, what: String) -> E {
        *self.fault.borrow_mut() = Some((code, what));
        E::custom("extra value refused")
    }

    fn string<E: de::Error>(&self, v: &str) -> Result<(), E> {
        if v.len() > self.limits.max_string_bytes {
            let limit = self.limits.max_string_bytes;
            return Err(self.fail(
                RejectCode::StringTooLong,
                format!("string of {} bytes exceeds the limit of {limit}", v.len()),
            ));
        }
        if v.contains('\0') {
            return Err(self.fail(
                RejectCode::InvalidString,
                "string contains U+0000, which PostgreSQL cannot store".to_owned(),
            ));
        }
        Ok(())
    }

    fn enter<E: de::Error>(&self) -> Result<Check<'_>, E> {
        let depth = self.depth + 1;
        if depth > self.limits.max_depth {
            let limit = self.limits.max_depth;
            return Err(self.fail(
                RejectCode::TooDeep,
                format!("nested deeper than {limit} levels"),
            ));
        }
        Ok(Check {
            depth,
            limits: self.limits,
            fault: self.fault,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Check<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.string(v)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.enter()?;
        let mut keys: Vec<Cow<'de, str>> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            self.string(&key)?;
            if keys.contains(&key) {
                return Err(self.fail(
                    RejectCode::DuplicateKey,
                    format!("nested key {} appears twice", quoted(&key)),
                ));
            }
            keys.push(key);
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// A key, borrowed from the payload when it has no escapes.
pub struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ExtraLimits = ExtraLimits {
        max_depth: 2,
        max_string_bytes: 4,
    };

    fn code(raw: &str) -> Option<RejectCode> {
        check("k", raw, LIMITS).err().map(|f| f.code)
    }

    #[test]
    fn values_within_limits_pass() {
        for raw in [
            "1",
            "-0.0",
            "1e300",
            "\"abcd\"",
            "null",
            "[[1]]",
            "{\"a\":{\"b\":1}}",
            "{}",
            "[]",
        ] {
            assert_eq!(code(raw), None, "{raw}");
        }
    }

    #[test]
    fn each_limit_has_its_code() {
        assert_eq!(code("[[[1]]]"), Some(RejectCode::TooDeep));
        assert_eq!(code("{\"a\":{\"b\":{}}}"), Some(RejectCode::TooDeep));
        assert_eq!(code("\"abcde\""), Some(RejectCode::StringTooLong));
        assert_eq!(code("{\"abcde\":1}"), Some(RejectCode::StringTooLong));
        assert_eq!(code("[\"ab\\u00e9cd\"]"), Some(RejectCode::StringTooLong));
        assert_eq!(code("\"\\u0000\""), Some(RejectCode::InvalidString));
        assert_eq!(code("{\"a\":1,\"a\":2}"), Some(RejectCode::DuplicateKey));
        assert_eq!(code("1e400"), Some(RejectCode::NonFinite));
        assert_eq!(code("[-1e400]"), Some(RejectCode::NonFinite));
    }

    #[test]
    fn reasons_name_the_key() {
        let fault = check("gps", "[[[0]]]", LIMITS).unwrap_err();
        assert_eq!(fault.reason, "key \"gps\": nested deeper than 2 levels");
    }

    #[test]
    fn json_type_is_read_from_the_first_byte() {
        assert_eq!(raw_json_type("{}"), "object");
        assert_eq!(raw_json_type("[1]"), "array");
        assert_eq!(raw_json_type("\"x\""), "string");
        assert_eq!(raw_json_type("false"), "boolean");
        assert_eq!(raw_json_type("null"), "null");
        assert_eq!(raw_json_type("-1.5"), "number");
    }
}
