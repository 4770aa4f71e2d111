//! Typed decoding of one known field or `ts` value, straight from the parser's events.
//!
//! A wrong type is not a parse error: the visitor returns `Ok(Err(fault))` so the parser
//! goes on and only the reading is rejected.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::copy::Value;
use crate::fields::Kind;
use crate::reject::{quoted, Fault, RejectCode};
use crate::ts;

/// A value's JSON type name, as reasons and the unknown-field catalog spell it.
pub mod json_type {
    pub const STRING: &str = "string";
    pub const NUMBER: &str = "number";
    pub const BOOLEAN: &str = "boolean";
    pub const NULL: &str = "null";
    pub const OBJECT: &str = "object";
    pub const ARRAY: &str = "array";
}

/// 2^63 as f64: the first float beyond `i64` range.
const I64_END: f64 = 9_223_372_036_854_775_808.0;

/// The value of `x` as an `i64` if it is integral and in range.
fn integral(x: f64) -> Option<i64> {
    (x.fract() == 0.0 && (-I64_END..I64_END).contains(&x)).then_some(x as i64)
}

/// Decodes one known field's value into a [`Value`], appending text to `text`.
pub struct FieldSeed<'a> {
    pub name: &'static str,
    pub kind: Kind,
    pub max_string_bytes: usize,
    pub text: &'a mut Vec<u8>,
}

impl FieldSeed<'_> {
    fn wrong(&self, got: &str) -> Fault {
        Fault::new(
            RejectCode::TypeError,
            format!(
                "field {}: expected {}, got {got}",
                self.name,
                self.kind.expected()
            ),
        )
    }

    fn int(&self, v: i64) -> Result<Value, Fault> {
        match self.kind {
            Kind::Float => Ok(Value::Float(v as f64)),
            Kind::Int => Ok(Value::Int(v)),
            _ => Err(self.wrong(json_type::NUMBER)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Result<Value, Fault>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Result<Value, Fault>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a JSON value for field {}", self.name)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(match self.kind {
            Kind::Bool => Ok(Value::Bool(v)),
            _ => Err(self.wrong(json_type::BOOLEAN)),
        })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match (self.kind, i64::try_from(v)) {
            (Kind::Float, _) => Ok(Value::Float(v as f64)),
            (Kind::Int, Ok(v)) => Ok(Value::Int(v)),
            (Kind::Int, Err(_)) => Err(Fault::new(
                RejectCode::TypeError,
                format!("field {}: integer {v} is out of bigint range", self.name),
            )),
            _ => Err(self.wrong(json_type::NUMBER)),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(match self.kind {
            Kind::Float => Ok(Value::Float(v)),
            Kind::Int => integral(v).map(Value::Int).ok_or_else(|| {
                Fault::new(
                    RejectCode::TypeError,
                    format!(
                        "field {}: expected integer, got non-integral number {v}",
                        self.name
                    ),
                )
            }),
            _ => Err(self.wrong(json_type::NUMBER)),
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if self.kind != Kind::Text {
            return Ok(Err(self.wrong(json_type::STRING)));
        }
        if v.len() > self.max_string_bytes {
            return Ok(Err(Fault::new(
                RejectCode::StringTooLong,
                format!(
                    "field {}: string of {} bytes exceeds the limit of {}",
                    self.name,
                    v.len(),
                    self.max_string_bytes
                ),
            )));
        }
        if v.contains('\0') {
            return Ok(Err(Fault::new(
                RejectCode::InvalidString,
                format!(
                    "field {}: string contains U+0000, which PostgreSQL cannot store",
                    self.name
                ),
            )));
        }
        let start = self.text.len() as u32;
        self.text.extend_from_slice(v.as_bytes());
        Ok(Ok(Value::Text(start, self.text.len() as u32)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Value::Null))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(self.wrong(json_type::OBJECT)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(self.wrong(json_type::ARRAY)))
    }
}

/// Decodes `ts` into Unix microseconds: integral epoch milliseconds or RFC 3339 with offset.
pub struct TsSeed;

fn ts_wrong(got: &str) -> Fault {
    Fault::new(
        RejectCode::TsInvalid,
        format!("ts: expected epoch milliseconds or an RFC 3339 string, got {got}"),
    )
}

fn ts_from_ms(ms: i64) -> Result<i64, Fault> {
    ts::from_epoch_ms(ms).ok_or_else(|| {
        Fault::new(
            RejectCode::TsOutOfRange,
            format!("ts {ms} ms since the Unix epoch out of range"),
        )
    })
}

impl<'de> DeserializeSeed<'de> for TsSeed {
    type Value = Result<i64, Fault>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TsSeed {
    type Value = Result<i64, Fault>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("epoch milliseconds or an RFC 3339 string")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(ts_wrong(json_type::BOOLEAN)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(ts_from_ms(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v)
            .map_err(|_| ())
            .and_then(|ms| ts_from_ms(ms).map_err(|_| ()))
            .map_err(|()| {
                Fault::new(
                    RejectCode::TsOutOfRange,
                    format!("ts {v} ms since the Unix epoch out of range"),
                )
            }))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(match integral(v) {
            Some(ms) => ts_from_ms(ms),
            None if v.fract() != 0.0 => Err(Fault::new(
                RejectCode::TsInvalid,
                format!("ts {v}: epoch milliseconds must be an integer"),
            )),
            None => Err(Fault::new(
                RejectCode::TsOutOfRange,
                format!("ts {v} ms since the Unix epoch out of range"),
            )),
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ts::parse_rfc3339(v).ok_or_else(|| {
            Fault::new(
                RejectCode::TsInvalid,
                format!("ts {} is not an RFC 3339 date-time with offset", quoted(v)),
            )
        }))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(ts_wrong(json_type::NULL)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(ts_wrong(json_type::OBJECT)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(ts_wrong(json_type::ARRAY)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(kind: Kind, json: &str) -> Result<Value, Fault> {
        let mut text = Vec::new();
        let seed = FieldSeed {
            name: "f",
            kind,
            max_string_bytes: 8,
            text: &mut text,
        };
        let mut de = serde_json::Deserializer::from_str(json);
        seed.deserialize(&mut de).unwrap()
    }

    fn ts(json: &str) -> Result<i64, Fault> {
        TsSeed
            .deserialize(&mut serde_json::Deserializer::from_str(json))
            .unwrap()
    }

    #[test]
    fn float_fields_take_integers_and_keep_negative_zero() {
        assert_eq!(field(Kind::Float, "3"), Ok(Value::Float(3.0)));
        assert_eq!(
            field(Kind::Float, "18446744073709551615"),
            Ok(Value::Float(1.844_674_407_370_955_2e19))
        );
        let Ok(Value::Float(z)) = field(Kind::Float, "-0.0") else {
            panic!()
        };
        assert!(z == 0.0 && z.is_sign_negative());
        assert_eq!(field(Kind::Float, "null"), Ok(Value::Null));
    }

    #[test]
    fn int_fields_take_integral_numbers_only() {
        assert_eq!(
            field(Kind::Int, "-9223372036854775808"),
            Ok(Value::Int(i64::MIN))
        );
        assert_eq!(
            field(Kind::Int, "9223372036854775807"),
            Ok(Value::Int(i64::MAX))
        );
        assert_eq!(field(Kind::Int, "5.0"), Ok(Value::Int(5)));
        let err = field(Kind::Int, "5.5").unwrap_err();
        assert_eq!(err.code, RejectCode::TypeError);
        assert_eq!(
            err.reason,
            "field f: expected integer, got non-integral number 5.5"
        );
        assert!(field(Kind::Int, "9223372036854775808")
            .unwrap_err()
            .reason
            .contains("bigint"));
        assert_eq!(
            field(Kind::Int, "9.3e18").unwrap_err().code,
            RejectCode::TypeError
        );
    }

    #[test]
    fn wrong_json_types_name_what_they_got() {
        let cases = [
            (Kind::Float, "\"1\"", "field f: expected number, got string"),
            (Kind::Bool, "1", "field f: expected boolean, got number"),
            (
                Kind::Bool,
                "\"true\"",
                "field f: expected boolean, got string",
            ),
            (Kind::Text, "1", "field f: expected string, got number"),
            (Kind::Text, "true", "field f: expected string, got boolean"),
            (
                Kind::Float,
                "{\"a\":1}",
                "field f: expected number, got object",
            ),
            (Kind::Int, "[1,[2]]", "field f: expected integer, got array"),
        ];
        for (kind, json, reason) in cases {
            assert_eq!(
                field(kind, json),
                Err(Fault::new(RejectCode::TypeError, reason)),
                "{json}"
            );
        }
    }

    #[test]
    fn text_fields_respect_length_and_nul() {
        assert!(matches!(
            field(Kind::Text, "\"12345678\""),
            Ok(Value::Text(0, 8))
        ));
        assert_eq!(
            field(Kind::Text, "\"123456789\"").unwrap_err().code,
            RejectCode::StringTooLong
        );
        assert_eq!(
            field(Kind::Text, "\"a\\u0000\"").unwrap_err().code,
            RejectCode::InvalidString
        );
    }

    #[test]
    fn ts_takes_epoch_ms_or_rfc3339() {
        assert_eq!(ts("1700000000123"), Ok(1_700_000_000_123_000));
        assert_eq!(ts("1700000000123.0"), Ok(1_700_000_000_123_000));
        assert_eq!(
            ts("\"2023-11-14T22:13:20.123+00:00\""),
            Ok(1_700_000_000_123_000)
        );
        assert_eq!(ts("1.5").unwrap_err().code, RejectCode::TsInvalid);
        assert_eq!(ts("\"yesterday\"").unwrap_err().code, RejectCode::TsInvalid);
        assert_eq!(ts("null").unwrap_err().code, RejectCode::TsInvalid);
        assert_eq!(ts("true").unwrap_err().code, RejectCode::TsInvalid);
        assert_eq!(ts("[1]").unwrap_err().code, RejectCode::TsInvalid);
        assert_eq!(
            ts("9223372036854775807").unwrap_err().code,
            RejectCode::TsOutOfRange
        );
        assert_eq!(
            ts("18446744073709551615").unwrap_err().code,
            RejectCode::TsOutOfRange
        );
        assert_eq!(ts("1e300").unwrap_err().code, RejectCode::TsOutOfRange);
    }
}
