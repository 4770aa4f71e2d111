//! Typed decoding of one known field or `ts` value from a scanned JSON scalar.
//!
//! A wrong type is a [`Fault`] for the reading, never a parse error: the scanner has already
//! consumed the value, so the rest of the message goes on.

use crate::copy::Value;
use crate::fields::Kind;
use crate::json::{self, Number, Scalar, Scanner};
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

/// The JSON type name of a scalar.
pub fn type_of(v: &Scalar<'_>) -> &'static str {
    match v {
        Scalar::Null => json_type::NULL,
        Scalar::Bool(_) => json_type::BOOLEAN,
        Scalar::Str(_) => json_type::STRING,
        Scalar::Num(_) => json_type::NUMBER,
        Scalar::Object => json_type::OBJECT,
        Scalar::Array => json_type::ARRAY,
    }
}

/// 2^63 as f64: the first float beyond `i64` range.
const I64_END: f64 = 9_223_372_036_854_775_808.0;

/// The value of `x` as an `i64` if it is integral and in range.
fn integral(x: f64) -> Option<i64> {
    (x.fract() == 0.0 && (-I64_END..I64_END).contains(&x)).then_some(x as i64)
}

/// How one known field's value is decoded; text goes to `text`.
pub struct FieldSeed<'a> {
    pub name: &'static str,
    pub kind: Kind,
    pub max_string_bytes: usize,
    pub text: &'a mut Vec<u8>,
}

impl FieldSeed<'_> {
    fn fault(&self, code: RejectCode, what: &str) -> Fault {
        Fault::new(code, format!("field {}: {what}", self.name))
    }

    fn wrong(&self, got: &str) -> Fault {
        self.fault(
            RejectCode::TypeError,
            &format!("expected {}, got {got}", self.kind.expected()),
        )
    }

    /// Reads the next value from `p` into `dst` as this field's column value, or says why the
    /// reading is rejected. The common shapes are decoded in place (a known field is almost
    /// always of its own type); everything else goes through the general [`Scalar`].
    ///
    /// Each branch stores straight into `dst`: returning the `Value` instead made the caller
    /// reload it as one 16-byte word from two narrower stores, a store-forwarding stall on
    /// every field.
    #[inline]
    pub fn read(self, p: &mut Scanner<'_>, dst: &mut Value) -> json::Result<Result<(), Fault>> {
        match (self.kind, p.peek()) {
            (Kind::Float, Some(b'-' | b'0'..=b'9')) => {
                let n = p.number()?;
                let v = n.as_f64();
                if v.is_finite() {
                    *dst = Value::Float(v);
                    return Ok(Ok(()));
                }
                Ok(self.float(&n).map(|v| *dst = Value::Float(v)))
            }
            (Kind::Int, Some(b'-' | b'0'..=b'9')) => {
                let n = p.number()?;
                if let Some(v) = n.as_i64() {
                    *dst = Value::Int(v);
                    return Ok(Ok(()));
                }
                Ok(self.int(&n).map(|v| *dst = Value::Int(v)))
            }
            (Kind::Bool, Some(b't' | b'f')) => {
                *dst = Value::Bool(p.boolean()?);
                Ok(Ok(()))
            }
            (Kind::Text, Some(b'"')) => {
                let s = p.string()?;
                Ok(self.string(&s).map(|v| *dst = v))
            }
            _ => Ok(self.decode(p.scalar()?).map(|v| *dst = v)),
        }
    }

    /// The column value of `v`, or why the reading is rejected.
    pub fn decode(self, v: Scalar<'_>) -> Result<Value, Fault> {
        match (self.kind, v) {
            (_, Scalar::Null) => Ok(Value::Null),
            (Kind::Float, Scalar::Num(n)) => self.float(&n).map(Value::Float),
            (Kind::Int, Scalar::Num(n)) => self.int(&n).map(Value::Int),
            (Kind::Bool, Scalar::Bool(b)) => Ok(Value::Bool(b)),
            (Kind::Text, Scalar::Str(s)) => self.string(&s),
            (_, other) => Err(self.wrong(type_of(&other))),
        }
    }

    fn float(&self, n: &Number<'_>) -> Result<f64, Fault> {
        let v = n.as_f64();
        if v.is_finite() {
            Ok(v)
        } else {
            let what = format!(
                "number {} is out of double precision range",
                quoted(n.text())
            );
            Err(self.fault(RejectCode::NonFinite, &what))
        }
    }

    fn int(&self, n: &Number<'_>) -> Result<i64, Fault> {
        if let Some(v) = n.as_i64() {
            return Ok(v);
        }
        if n.integer {
            let what = format!("integer {} is out of bigint range", n.text());
            return Err(self.fault(RejectCode::TypeError, &what));
        }
        let v = self.float(n)?;
        integral(v).ok_or_else(|| {
            let what = if v.fract() == 0.0 {
                "out of bigint range"
            } else {
                "non-integral"
            };
            let what = format!("expected integer, got {what} number {}", n.text());
            self.fault(RejectCode::TypeError, &what)
        })
    }

    fn string(self, v: &str) -> Result<Value, Fault> {
        if v.len() > self.max_string_bytes {
            let what = format!(
                "string of {} bytes exceeds the limit of {}",
                v.len(),
                self.max_string_bytes
            );
            return Err(self.fault(RejectCode::StringTooLong, &what));
        }
        if v.contains('\0') {
            let what = "string contains U+0000, which PostgreSQL cannot store";
            return Err(self.fault(RejectCode::InvalidString, what));
        }
        let start = self.text.len() as u32;
        self.text.extend_from_slice(v.as_bytes());
        Ok(Value::Text(start, self.text.len() as u32))
    }
}

fn ts_wrong(got: &str) -> Fault {
    Fault::new(
        RejectCode::TsInvalid,
        format!("ts: expected epoch milliseconds or an RFC 3339 string, got {got}"),
    )
}

fn ts_out_of_range(text: &str) -> Fault {
    Fault::new(
        RejectCode::TsOutOfRange,
        format!("ts {text} ms since the Unix epoch out of range"),
    )
}

/// Decodes `ts` into Unix microseconds: integral epoch milliseconds or RFC 3339 with offset.
pub fn ts_value(v: Scalar<'_>) -> Result<i64, Fault> {
    match v {
        Scalar::Num(n) => {
            let ms = match n.as_i64() {
                Some(ms) => ms,
                None if n.integer => return Err(ts_out_of_range(n.text())),
                None => {
                    let f = n.as_f64();
                    if f.fract() != 0.0 {
                        return Err(Fault::new(
                            RejectCode::TsInvalid,
                            format!("ts {}: epoch milliseconds must be an integer", n.text()),
                        ));
                    }
                    integral(f).ok_or_else(|| ts_out_of_range(n.text()))?
                }
            };
            ts::from_epoch_ms(ms).ok_or_else(|| ts_out_of_range(n.text()))
        }
        Scalar::Str(s) => ts::parse_rfc3339(&s).ok_or_else(|| {
            Fault::new(
                RejectCode::TsInvalid,
                format!("ts {} is not an RFC 3339 date-time with offset", quoted(&s)),
            )
        }),
        other => Err(ts_wrong(type_of(&other))),
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
        seed.decode(Scanner::new(json).scalar().unwrap())
    }

    fn ts(json: &str) -> Result<i64, Fault> {
        ts_value(Scanner::new(json).scalar().unwrap())
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
