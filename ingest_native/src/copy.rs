//! PostgreSQL binary COPY encoding of `telemetry_events` tuples.
//!
//! Format (PostgreSQL docs, "COPY", binary format): the 11-byte signature `PGCOPY\n\xff\r\n\0`,
//! an i32 flags field (0: no OIDs), an i32 header-extension length (0); then per tuple an i16
//! field count and, per field, an i32 byte length (-1 for NULL) followed by the value in the
//! type's binary send format; then the trailer, an i16 -1. All integers are big-endian.

use crate::fields::{COLUMN_COUNT, FIELD_COUNT};
use crate::ts::PG_EPOCH_OFFSET_US;

/// Signature, flags and header extension length.
pub const HEADER: &[u8; 19] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a tuple field count of -1.
pub const TRAILER: [u8; 2] = (-1_i16).to_be_bytes();
/// The jsonb binary format version PostgreSQL expects before the JSON text.
const JSONB_VERSION: u8 = 1;

/// A decoded known-field value, ready to encode. Text lives in a side buffer (see
/// [`Row::text`]) so a row borrows nothing from the payload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Null,
    Float(f64),
    Int(i64),
    Bool(bool),
    /// Byte range in the row's text buffer.
    Text(u32, u32),
}

/// One accepted reading, in column order.
pub struct Row<'a> {
    /// Unix microseconds.
    pub time_us: i64,
    pub device_id: &'a [u8; 16],
    pub client_id: &'a [u8; 16],
    pub values: &'a [Value; FIELD_COUNT],
    /// Backing bytes of every [`Value::Text`].
    pub text: &'a [u8],
    /// JSON text of the `extra` object, or `None` for a NULL column.
    pub extra: Option<&'a [u8]>,
}

/// Appends COPY tuples to one growing buffer that starts with the header.
pub struct CopyWriter {
    buf: Vec<u8>,
}

impl Default for CopyWriter {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl CopyWriter {
    /// A writer whose buffer already holds the header; `capacity` is a hint in bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(HEADER.len() + TRAILER.len()));
        buf.extend_from_slice(HEADER);
        CopyWriter { buf }
    }

    /// Bytes written so far (header included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing but the header was written.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == HEADER.len()
    }

    /// Drops everything after the first `len` bytes (to undo a message's tuples).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len.max(HEADER.len()));
    }

    /// Appends one tuple.
    pub fn write_row(&mut self, row: &Row<'_>) {
        let buf = &mut self.buf;
        buf.extend_from_slice(&(COLUMN_COUNT as i16).to_be_bytes());
        put_field(buf, &(row.time_us - PG_EPOCH_OFFSET_US).to_be_bytes());
        put_field(buf, row.device_id);
        put_field(buf, row.client_id);
        for value in row.values {
            match *value {
                Value::Null => put_null(buf),
                Value::Float(v) => put_field(buf, &v.to_be_bytes()),
                Value::Int(v) => put_field(buf, &v.to_be_bytes()),
                Value::Bool(v) => put_field(buf, &[u8::from(v)]),
                Value::Text(start, end) => put_field(buf, &row.text[start as usize..end as usize]),
            }
        }
        match row.extra {
            None => put_null(buf),
            Some(json) => {
                buf.extend_from_slice(&(json.len() as i32 + 1).to_be_bytes());
                buf.push(JSONB_VERSION);
                buf.extend_from_slice(json);
            }
        }
    }

    /// The finished buffer: header, tuples, trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&TRAILER);
        self.buf
    }
}

/// Appends one non-NULL field: its length, then its bytes.
pub(crate) fn put_field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// Appends a NULL field.
pub(crate) fn put_null(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(-1_i32).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_copy_is_header_and_trailer() {
        let out = CopyWriter::default().finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(out, expected);
    }

    #[test]
    fn a_tuple_is_encoded_byte_for_byte() {
        let mut values = [Value::Null; FIELD_COUNT];
        values[0] = Value::Float(-0.0);
        values[25] = Value::Int(i64::MIN);
        values[31] = Value::Bool(true);
        values[32] = Value::Bool(false);
        values[36] = Value::Text(0, 4);
        let device = [0x11; 16];
        let client = [0x22; 16];
        let mut w = CopyWriter::default();
        w.write_row(&Row {
            // 2000-01-01T00:00:01Z: one second after PostgreSQL's epoch.
            time_us: PG_EPOCH_OFFSET_US + 1_000_000,
            device_id: &device,
            client_id: &client,
            values: &values,
            text: "ok\u{e9}".as_bytes(),
            extra: Some(br#"{"a":[1]}"#),
        });
        let out = w.finish();
        let mut exp: Vec<u8> = HEADER.to_vec();
        exp.extend_from_slice(&41_i16.to_be_bytes());
        exp.extend_from_slice(&8_i32.to_be_bytes());
        exp.extend_from_slice(&1_000_000_i64.to_be_bytes());
        exp.extend_from_slice(&16_i32.to_be_bytes());
        exp.extend_from_slice(&device);
        exp.extend_from_slice(&16_i32.to_be_bytes());
        exp.extend_from_slice(&client);
        for (i, v) in values.iter().enumerate() {
            match v {
                Value::Null => exp.extend_from_slice(&[0xff; 4]),
                // -0.0 and i64::MIN share their bit pattern.
                Value::Float(_) | Value::Int(_) => {
                    exp.extend_from_slice(&8_i32.to_be_bytes());
                    exp.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0]);
                }
                Value::Bool(b) => {
                    exp.extend_from_slice(&1_i32.to_be_bytes());
                    exp.push(u8::from(*b));
                }
                Value::Text(..) => {
                    exp.extend_from_slice(&4_i32.to_be_bytes());
                    exp.extend_from_slice(&[b'o', b'k', 0xc3, 0xa9]);
                    assert_eq!(i, 36);
                }
            }
        }
        exp.extend_from_slice(&10_i32.to_be_bytes());
        exp.push(1);
        exp.extend_from_slice(br#"{"a":[1]}"#);
        exp.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(out, exp);
    }

    #[test]
    fn times_before_2000_are_negative() {
        let values = [Value::Null; FIELD_COUNT];
        let mut w = CopyWriter::default();
        w.write_row(&Row {
            time_us: 0,
            device_id: &[0; 16],
            client_id: &[0; 16],
            values: &values,
            text: &[],
            extra: None,
        });
        let out = w.finish();
        let at = HEADER.len() + 2 + 4;
        assert_eq!(out[at..at + 8], (-PG_EPOCH_OFFSET_US).to_be_bytes());
    }
}
