//! Decodes a batch of MQTT telemetry payloads into one binary COPY buffer.
//!
//! A strict JSON scanner ([`crate::json`]) feeds each key and value straight into a
//! per-reading scratch row (no JSON tree is built), and an accepted reading is appended to
//! the COPY buffer as soon as its object closes.
//!
//! # Rules (ARCHITECTURE.md's MQTT contract, plus the cases it leaves open)
//!
//! Whole message rejected (`reading_index` is `None`), nothing of it kept:
//! - payload over `max_payload_bytes` → `too_large`; not UTF-8 → `invalid_utf8`;
//! - not JSON → `invalid_json`: syntax errors, trailing bytes, `NaN`/`Infinity` literals, a
//!   lone surrogate escape, nesting deeper than 128. A syntax error anywhere rejects the
//!   whole message, because nothing after it can be trusted;
//! - neither an object nor an array → `not_object`;
//! - an array of more than `max_readings_per_message` elements → `too_many_readings`.
//!
//! One reading rejected (`reading_index` is its position; 0 for a lone object), the others of
//! the message and the batch kept:
//! - an array element that is not an object → `not_object`;
//! - a known field of the wrong type → `type_error`. Float fields take any JSON number; int
//!   fields take integers in `i64` range and integral numbers such as `5.0` or `1e3`; bool
//!   fields take only `true`/`false`; text fields take only strings. `null` is a NULL column,
//!   like an absent field;
//! - `ts`: integral epoch milliseconds or an RFC 3339 string with offset (see [`crate::ts`]);
//!   anything else, `null` included, → `ts_invalid`. Absent → the message's receipt time.
//!   Outside [now − `max_past_seconds`, now + `max_future_seconds`] → `ts_out_of_range`;
//! - a key twice in the reading (or in an object inside an `extra` value) → `duplicate_key`;
//! - `time`, `device_id`, `client_id`, `extra` → `reserved_key`: the topic names the device;
//! - a string (text value, key, or string inside `extra`) over `max_string_bytes` →
//!   `string_too_long`; one containing U+0000 → `invalid_string` (PostgreSQL refuses it);
//! - more than `max_extra_keys` unknown keys → `too_many_keys`; an `extra` value nested deeper
//!   than `max_depth` → `too_deep`; a number beyond f64 range (in a known field or inside
//!   `extra`; PostgreSQL would refuse it) → `non_finite`;
//! - a second reading of the same device and time in one batch → `duplicate_ts` (the first is
//!   kept; the table's unique key would otherwise fail the whole COPY).
//!
//! The first fault of a reading decides its reject. Unknown keys go into `extra` (jsonb) in the
//! order received, each value's JSON text verbatim; a reading without unknown keys has a NULL
//! `extra`. Unknown fields are counted per (client, key) over accepted readings only, with the
//! JSON type and text of the first value seen in the batch.

use std::ops::Range;

use crate::copy::{CopyWriter, Row, Value};
use crate::extra::{self, ExtraLimits};
use crate::fields::{
    field_index, FIELDS, FIELD_COUNT, KEY_PATTERNS, RESERVED_KEYS, TS_KEY, TS_SLOT,
};
use crate::formulas::{FormulaSet, PointMark, PointWriter, Points};
use crate::json::{self, Scanner};
use crate::limits::Limits;
use crate::reject::{quoted, Fault, Reject, RejectCode};
use crate::ts::format_rfc3339;
use crate::value::{json_type, ts_value, type_of, FieldSeed};
use rustc_hash::{FxHashMap, FxHashSet};

/// One MQTT message: the device and client the topic resolved to, when it arrived, its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub device_id: [u8; 16],
    pub client_id: [u8; 16],
    pub received_at_us: i64,
    pub payload: &'a [u8],
}

/// An unknown key seen in accepted readings of one device (the caller sums devices up per
/// client for the client's catalogue, and records which devices sent which key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownField {
    pub client_id: [u8; 16],
    pub device_id: [u8; 16],
    /// The first message it was seen in (so the caller can reuse its id objects).
    pub message_index: usize,
    pub name: String,
    /// JSON type of the first value seen: string, number, boolean, null, object, array.
    pub json_type: &'static str,
    pub count: u64,
    /// JSON text of the first value seen.
    pub example: String,
}

/// The latest accepted reading time of one device in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceLatest {
    pub device_id: [u8; 16],
    /// Unix microseconds.
    pub time_us: i64,
    /// A message of this device (so the caller can reuse its device id object).
    pub message_index: usize,
}

/// Everything the ingest service needs to write and account for one batch.
#[derive(Debug, Default)]
pub struct Batch {
    /// Header, one tuple per accepted reading, trailer.
    pub copy_data: Vec<u8>,
    pub rejects: Vec<Reject>,
    pub unknown_fields: Vec<UnknownField>,
    /// Latest accepted reading time per device.
    pub latest: Vec<DeviceLatest>,
    /// Time of each row, in COPY order (Unix microseconds).
    pub row_times_us: Vec<i64>,
    /// Accepted rows of each input message, in input order.
    pub rows_per_message: Vec<usize>,
    /// The calculated points of the accepted rows (empty without formulas).
    pub points: Points,
}

impl Batch {
    /// Rows in the COPY buffer.
    pub fn rows(&self) -> usize {
        self.row_times_us.len()
    }
}

/// Decodes `messages` under `limits`, judging reading times against `now_us`.
pub fn decode_batch(messages: &[Message<'_>], limits: &Limits, now_us: i64) -> Batch {
    decode_batch_with_formulas(messages, limits, now_us, None)
}

/// The formulas a batch evaluates on its accepted readings, and each message's device type
/// (parallel to the messages; the formulas' scopes may name a type).
#[derive(Clone, Copy)]
pub struct BatchFormulas<'f> {
    pub set: &'f FormulaSet,
    pub device_types: &'f [Option<&'f str>],
}

/// As [`decode_batch`], and evaluates `formulas` on every accepted reading as it is encoded
/// ([`crate::formulas`]): their points come back in [`Batch::points`].
pub fn decode_batch_with_formulas(
    messages: &[Message<'_>],
    limits: &Limits,
    now_us: i64,
    formulas: Option<BatchFormulas<'_>>,
) -> Batch {
    let bytes: usize = messages.iter().map(|m| m.payload.len()).sum();
    let mut state = BatchState::new(limits, now_us, bytes / 2);
    let formulas = formulas.filter(|f| !f.set.is_empty());
    state.points = formulas.map(|f| (PointWriter::new(f.set), f.device_types));
    for (index, message) in messages.iter().enumerate() {
        state.message(index, message);
    }
    state.finish()
}

/// What one key of an unknown field looks like until its reading is accepted.
struct PendingKey {
    name: Range<usize>,
    json_type: &'static str,
    example: Range<usize>,
}

/// The scratch row of the reading being parsed; reused across readings.
struct ReadingState {
    values: [Value; FIELD_COUNT],
    /// Bit i: known field i was seen; bit 63: `ts` was seen.
    seen: u64,
    ts_us: Option<i64>,
    text: Vec<u8>,
    extra: Vec<u8>,
    unknown: Vec<PendingKey>,
}

const TS_BIT: u64 = 1 << 63;

impl ReadingState {
    fn new() -> Self {
        ReadingState {
            values: [Value::Null; FIELD_COUNT],
            seen: 0,
            ts_us: None,
            text: Vec::new(),
            extra: Vec::new(),
            unknown: Vec::new(),
        }
    }

    fn reset(&mut self) {
        self.values = [Value::Null; FIELD_COUNT];
        self.seen = 0;
        self.ts_us = None;
        self.text.clear();
        self.extra.clear();
        self.unknown.clear();
    }
}

/// The message being decoded.
struct Cursor<'m> {
    index: usize,
    message: &'m Message<'m>,
    rows: usize,
    latest: Option<i64>,
}

/// How a message's top-level value turned out, when it parsed.
enum Shape {
    Readings,
    NotObject(&'static str),
    TooManyReadings(usize),
}

struct Marks {
    copy: usize,
    rows: usize,
    rejects: usize,
    points: Option<PointMark>,
}

struct BatchState<'l> {
    limits: &'l Limits,
    /// The formulas' writer and the messages' device types, when the batch has formulas.
    points: Option<(PointWriter<'l>, &'l [Option<&'l str>])>,
    window: (i64, i64),
    copy: CopyWriter,
    row_times: Vec<i64>,
    rejects: Vec<Reject>,
    seen_times: FxHashSet<([u8; 16], i64)>,
    latest: FxHashMap<[u8; 16], DeviceLatest>,
    unknown: Vec<UnknownField>,
    /// Per device: name → index in `unknown`.
    unknown_index: FxHashMap<[u8; 16], FxHashMap<String, usize>>,
    rows_per_message: Vec<usize>,
    reading: ReadingState,
    /// Unknown keys of the current message's accepted readings: (name, type, example).
    pending_unknown: Vec<(String, &'static str, String)>,
}

impl<'l> BatchState<'l> {
    fn new(limits: &'l Limits, now_us: i64, capacity: usize) -> Self {
        let past = limits.max_past_seconds.saturating_mul(1_000_000);
        let future = limits.max_future_seconds.saturating_mul(1_000_000);
        BatchState {
            limits,
            points: None,
            window: (now_us.saturating_sub(past), now_us.saturating_add(future)),
            copy: CopyWriter::with_capacity(capacity),
            row_times: Vec::new(),
            rejects: Vec::new(),
            seen_times: FxHashSet::default(),
            latest: FxHashMap::default(),
            unknown: Vec::new(),
            unknown_index: FxHashMap::default(),
            rows_per_message: Vec::new(),
            reading: ReadingState::new(),
            pending_unknown: Vec::new(),
        }
    }

    fn finish(self) -> Batch {
        Batch {
            copy_data: self.copy.finish(),
            rejects: self.rejects,
            unknown_fields: self.unknown,
            latest: self.latest.into_values().collect(),
            row_times_us: self.row_times,
            rows_per_message: self.rows_per_message,
            points: self.points.map(|(w, _)| w.finish()).unwrap_or_default(),
        }
    }

    fn message(&mut self, index: usize, message: &Message<'_>) {
        let fault = self.message_fault(index, message);
        if let Some(fault) = fault {
            self.rejects.push(Reject {
                message_index: index,
                reading_index: None,
                code: fault.code,
                reason: fault.reason,
            });
            self.rows_per_message.push(0);
        }
    }

    /// Decodes one message; a whole-message fault leaves no trace of its readings.
    fn message_fault(&mut self, index: usize, message: &Message<'_>) -> Option<Fault> {
        let max = self.limits.max_payload_bytes;
        if message.payload.len() > max {
            return Some(Fault::new(
                RejectCode::TooLarge,
                format!(
                    "payload of {} bytes exceeds the limit of {max}",
                    message.payload.len()
                ),
            ));
        }
        // simdutf8 picks SSE4.2/AVX2/NEON at run time: the wheel stays portable.
        let text = match simdutf8::compat::from_utf8(message.payload) {
            Ok(text) => text,
            Err(err) => {
                return Some(Fault::new(
                    RejectCode::InvalidUtf8,
                    format!(
                        "payload is not UTF-8 (invalid byte at offset {})",
                        err.valid_up_to()
                    ),
                ))
            }
        };
        let marks = Marks {
            copy: self.copy.len(),
            rows: self.row_times.len(),
            rejects: self.rejects.len(),
            points: self.points.as_ref().map(|(w, _)| w.mark()),
        };
        self.pending_unknown.clear();
        let mut cursor = Cursor {
            index,
            message,
            rows: 0,
            latest: None,
        };
        let mut scanner = Scanner::new(text);
        let shape = self
            .top_level(&mut scanner, &mut cursor)
            .and_then(|shape| scanner.end().map(|()| shape));
        let fault = match shape {
            Ok(Shape::Readings) => {
                self.commit(&cursor);
                return None;
            }
            Ok(Shape::NotObject(got)) => Fault::new(
                RejectCode::NotObject,
                format!(
                    "payload is {}; expected an object or an array of objects",
                    article(got)
                ),
            ),
            Ok(Shape::TooManyReadings(n)) => Fault::new(
                RejectCode::TooManyReadings,
                format!(
                    "array of {n} readings exceeds the limit of {}",
                    self.limits.max_readings_per_message
                ),
            ),
            Err(err) => Fault::new(RejectCode::InvalidJson, err.to_string()),
        };
        self.rollback(&marks, &message.device_id);
        Some(fault)
    }

    fn commit(&mut self, cursor: &Cursor<'_>) {
        let device = cursor.message.device_id;
        if let Some(time_us) = cursor.latest {
            let latest = DeviceLatest {
                device_id: device,
                time_us,
                message_index: cursor.index,
            };
            let kept = self.latest.entry(device).or_insert(latest);
            if time_us > kept.time_us {
                *kept = latest;
            }
        }
        let client = cursor.message.client_id;
        for (name, json_type, example) in self.pending_unknown.drain(..) {
            let by_name = self.unknown_index.entry(device).or_default();
            if let Some(&i) = by_name.get(&name) {
                self.unknown[i].count += 1;
            } else {
                by_name.insert(name.clone(), self.unknown.len());
                self.unknown.push(UnknownField {
                    client_id: client,
                    device_id: device,
                    message_index: cursor.index,
                    name,
                    json_type,
                    count: 1,
                    example,
                });
            }
        }
        self.rows_per_message.push(cursor.rows);
        if let Some((w, _)) = &mut self.points {
            w.commit();
        }
    }

    fn rollback(&mut self, marks: &Marks, device: &[u8; 16]) {
        self.copy.truncate(marks.copy);
        if let (Some((w, _)), Some(mark)) = (&mut self.points, marks.points) {
            w.rollback(mark);
        }
        for &t in &self.row_times[marks.rows..] {
            self.seen_times.remove(&(*device, t));
        }
        self.row_times.truncate(marks.rows);
        self.rejects.truncate(marks.rejects);
        self.pending_unknown.clear();
    }

    fn reject_reading(&mut self, cursor: &Cursor<'_>, reading: usize, fault: Fault) {
        self.rejects.push(Reject {
            message_index: cursor.index,
            reading_index: Some(reading),
            code: fault.code,
            reason: fault.reason,
        });
    }

    /// Parses the payload's top-level value: one reading or an array of them.
    fn top_level(&mut self, p: &mut Scanner<'_>, cursor: &mut Cursor<'_>) -> json::Result<Shape> {
        match p.peek() {
            Some(b'{') => {
                self.reading(p, cursor, 0)?;
                Ok(Shape::Readings)
            }
            Some(b'[') => {
                let max = self.limits.max_readings_per_message;
                let mut count = 0;
                if !p.open(b'[', b']')? {
                    loop {
                        if count >= max {
                            p.skip()?;
                        } else if p.peek() == Some(b'{') {
                            self.reading(p, cursor, count)?;
                        } else {
                            let got = type_of(&p.scalar()?);
                            let fault = Fault::new(
                                RejectCode::NotObject,
                                format!("reading is {}; expected an object", article(got)),
                            );
                            self.reject_reading(cursor, count, fault);
                        }
                        count += 1;
                        if !p.more(b']')? {
                            break;
                        }
                    }
                }
                Ok(if count > max {
                    Shape::TooManyReadings(count)
                } else {
                    Shape::Readings
                })
            }
            _ => Ok(Shape::NotObject(type_of(&p.scalar()?))),
        }
    }

    /// Parses one reading object into the scratch row, then accepts or rejects it.
    fn reading(
        &mut self,
        p: &mut Scanner<'_>,
        cursor: &mut Cursor<'_>,
        reading: usize,
    ) -> json::Result<()> {
        self.reading.reset();
        let mut fault = None;
        if !p.open(b'{', b'}')? {
            // The slot in KEY_PATTERNS of the key expected next: devices send the same keys
            // in the same order every time, usually `ts` then the fields in column order.
            let mut guess = TS_SLOT;
            loop {
                let slot = if guess < KEY_PATTERNS.len() && p.take_key(&KEY_PATTERNS[guess]) {
                    Some(guess)
                } else {
                    None
                };
                if let Some(slot) = slot {
                    guess = next_guess(slot);
                    if fault.is_some() {
                        p.skip()?;
                    } else {
                        fault = self.slot(p, slot)?.err();
                    }
                } else {
                    let key = p.key()?;
                    if let Some(slot) = key_slot(&key) {
                        guess = next_guess(slot);
                    }
                    if fault.is_some() {
                        p.skip()?;
                    } else {
                        fault = self.entry(p, &key)?.err();
                    }
                }
                if !p.more(b'}')? {
                    break;
                }
            }
        }
        match fault {
            Some(fault) => self.reject_reading(cursor, reading, fault),
            None => self.accept(cursor, reading),
        }
        Ok(())
    }

    /// Reads the value of the known field or `ts` in `slot` of [`KEY_PATTERNS`].
    #[inline]
    fn slot(&mut self, p: &mut Scanner<'_>, slot: usize) -> json::Result<Result<(), Fault>> {
        let r = &mut self.reading;
        if slot == TS_SLOT {
            if r.seen & TS_BIT != 0 {
                p.skip()?;
                return Ok(Err(duplicate(TS_KEY)));
            }
            r.seen |= TS_BIT;
            return Ok(ts_value(p.scalar()?).map(|t| r.ts_us = Some(t)));
        }
        let field = FIELDS[slot];
        if r.seen & (1 << slot) != 0 {
            p.skip()?;
            return Ok(Err(duplicate(field.name)));
        }
        r.seen |= 1 << slot;
        let seed = FieldSeed {
            name: field.name,
            kind: field.kind,
            max_string_bytes: self.limits.max_string_bytes,
            text: &mut r.text,
        };
        seed.read(p, &mut r.values[slot])
    }

    /// Reads the value of `key` into the scratch row.
    fn entry(&mut self, p: &mut Scanner<'_>, key: &str) -> json::Result<Result<(), Fault>> {
        if let Some(slot) = key_slot(key) {
            return self.slot(p, slot);
        }
        if RESERVED_KEYS.contains(&key) {
            p.skip()?;
            return Ok(Err(Fault::new(
                RejectCode::ReservedKey,
                format!("key {key} is reserved: the topic names the device"),
            )));
        }
        let raw = p.raw()?;
        Ok(self.unknown_key(key, raw))
    }

    /// Appends an unknown key and its raw value to the scratch `extra` object.
    fn unknown_key(&mut self, key: &str, raw: &str) -> Result<(), Fault> {
        let limits = self.limits;
        let r = &mut self.reading;
        if key.len() > limits.max_string_bytes {
            return Err(Fault::new(
                RejectCode::StringTooLong,
                format!(
                    "key {}: {} bytes exceeds the limit of {}",
                    quoted(key),
                    key.len(),
                    limits.max_string_bytes
                ),
            ));
        }
        if key.contains('\0') {
            return Err(Fault::new(
                RejectCode::InvalidString,
                format!(
                    "key {} contains U+0000, which PostgreSQL cannot store",
                    quoted(key)
                ),
            ));
        }
        if r.unknown
            .iter()
            .any(|u| &r.text[u.name.clone()] == key.as_bytes())
        {
            return Err(duplicate(key));
        }
        if r.unknown.len() >= limits.max_extra_keys {
            return Err(Fault::new(
                RejectCode::TooManyKeys,
                format!("more than {} unknown keys", limits.max_extra_keys),
            ));
        }
        let extra_limits = ExtraLimits {
            max_depth: limits.max_depth,
            max_string_bytes: limits.max_string_bytes,
        };
        extra::check(key, raw, extra_limits)?;
        r.extra.push(if r.extra.is_empty() { b'{' } else { b',' });
        write_json_string(&mut r.extra, key);
        r.extra.push(b':');
        let example = r.extra.len()..r.extra.len() + raw.len();
        r.extra.extend_from_slice(raw.as_bytes());
        let name = r.text.len()..r.text.len() + key.len();
        r.text.extend_from_slice(key.as_bytes());
        r.unknown.push(PendingKey {
            name,
            json_type: extra::raw_json_type(raw),
            example,
        });
        Ok(())
    }

    /// Checks the reading's time and appends its tuple.
    fn accept(&mut self, cursor: &mut Cursor<'_>, reading: usize) {
        let message = cursor.message;
        let r = &mut self.reading;
        let (time, what) = match r.ts_us {
            Some(t) => (t, ""),
            None => (message.received_at_us, " (time of receipt)"),
        };
        let (lo, hi) = self.window;
        if !(lo..=hi).contains(&time) {
            let fault = Fault::new(
                RejectCode::TsOutOfRange,
                format!(
                    "ts {}{what} out of range (accepted from {} to {})",
                    format_rfc3339(time),
                    format_rfc3339(lo),
                    format_rfc3339(hi)
                ),
            );
            return self.reject_reading(cursor, reading, fault);
        }
        if !self.seen_times.insert((message.device_id, time)) {
            let fault = Fault::new(
                RejectCode::DuplicateTs,
                format!(
                    "ts {}: an earlier reading of this device in the batch has the same time",
                    format_rfc3339(time)
                ),
            );
            return self.reject_reading(cursor, reading, fault);
        }
        let extra = if r.extra.is_empty() {
            None
        } else {
            r.extra.push(b'}');
            Some(r.extra.as_slice())
        };
        self.copy.write_row(&Row {
            time_us: time,
            device_id: &message.device_id,
            client_id: &message.client_id,
            values: &r.values,
            text: &r.text,
            extra,
        });
        if let Some((w, device_types)) = &mut self.points {
            let device_type = device_types.get(cursor.index).copied().flatten();
            w.reading(
                &message.client_id,
                &message.device_id,
                device_type,
                time,
                &r.values,
            );
        }
        for key in &r.unknown {
            let name = String::from_utf8_lossy(&r.text[key.name.clone()]).into_owned();
            let example = String::from_utf8_lossy(&r.extra[key.example.clone()]).into_owned();
            self.pending_unknown.push((name, key.json_type, example));
        }
        self.row_times.push(time);
        cursor.rows += 1;
        cursor.latest = Some(cursor.latest.map_or(time, |l| l.max(time)));
    }
}

/// The slot in [`KEY_PATTERNS`] of a known field or `ts`.
fn key_slot(key: &str) -> Option<usize> {
    field_index(key).or(if key == TS_KEY { Some(TS_SLOT) } else { None })
}

/// The key guessed after the one in `slot`: the next column (after `ts`, the first), and no
/// guess after the last.
fn next_guess(slot: usize) -> usize {
    match slot {
        TS_SLOT => 0,
        // Past the table: `take_key` is not tried.
        s if s + 1 == FIELD_COUNT => KEY_PATTERNS.len(),
        s => s + 1,
    }
}

fn duplicate(key: &str) -> Fault {
    Fault::new(
        RejectCode::DuplicateKey,
        format!("key {} appears twice", quoted(key)),
    )
}

fn article(json_type: &str) -> String {
    match json_type {
        json_type::OBJECT | json_type::ARRAY => format!("an {json_type}"),
        json_type::NULL => "null".to_owned(),
        _ => format!("a {json_type}"),
    }
}

/// Appends `s` as a JSON string literal.
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail, and a &str always serializes.
    serde_json::to_writer(&mut *out, s).unwrap_or_default();
}
