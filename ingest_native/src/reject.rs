//! Why a reading or a message was not accepted: a stable code plus a precise reason.

/// A stable, short label for metrics; [`RejectCode::as_str`] is what Python sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// The payload is not JSON (syntax, NaN/Infinity literals, trailing bytes, a lone
    /// surrogate escape, nesting deeper than 128). Whole message.
    InvalidJson,
    /// The payload is not UTF-8. Whole message.
    InvalidUtf8,
    /// The payload is not an object or array, or an array element is not an object.
    NotObject,
    /// A known field holds a value of the wrong JSON type.
    TypeError,
    /// `ts` is neither integral epoch milliseconds nor RFC 3339 with an offset.
    TsInvalid,
    /// The reading time is outside the accepted window around "now".
    TsOutOfRange,
    /// The payload is larger than `max_payload_bytes`. Whole message.
    TooLarge,
    /// An array holds more than `max_readings_per_message` readings. Whole message.
    TooManyReadings,
    /// More than `max_extra_keys` unknown keys.
    TooManyKeys,
    /// An `extra` value nests deeper than `max_depth`.
    TooDeep,
    /// A string (value or key) is longer than `max_string_bytes`.
    StringTooLong,
    /// A string contains U+0000, which PostgreSQL text and jsonb cannot store.
    InvalidString,
    /// A key appears twice in one object (the reading or an object inside `extra`).
    DuplicateKey,
    /// The reading names a column the platform fills: `time`, `device_id`, `client_id`, `extra`.
    ReservedKey,
    /// A number (known field or inside `extra`) is beyond f64 range.
    NonFinite,
    /// An earlier reading of the same batch has the same device and time.
    DuplicateTs,
}

impl RejectCode {
    /// The label exported to Python and Prometheus; never changes for a given variant.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectCode::InvalidJson => "invalid_json",
            RejectCode::InvalidUtf8 => "invalid_utf8",
            RejectCode::NotObject => "not_object",
            RejectCode::TypeError => "type_error",
            RejectCode::TsInvalid => "ts_invalid",
            RejectCode::TsOutOfRange => "ts_out_of_range",
            RejectCode::TooLarge => "too_large",
            RejectCode::TooManyReadings => "too_many_readings",
            RejectCode::TooManyKeys => "too_many_keys",
            RejectCode::TooDeep => "too_deep",
            RejectCode::StringTooLong => "string_too_long",
            RejectCode::InvalidString => "invalid_string",
            RejectCode::DuplicateKey => "duplicate_key",
            RejectCode::ReservedKey => "reserved_key",
            RejectCode::NonFinite => "non_finite",
            RejectCode::DuplicateTs => "duplicate_ts",
        }
    }
}

/// A code with its human reason, before it is tied to a message and reading index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub code: RejectCode,
    pub reason: String,
}

impl Fault {
    pub fn new(code: RejectCode, reason: impl Into<String>) -> Self {
        Fault {
            code,
            reason: reason.into(),
        }
    }
}

/// One rejected reading (`reading_index` set) or whole message (`reading_index` is `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub message_index: usize,
    pub reading_index: Option<usize>,
    pub code: RejectCode,
    pub reason: String,
}

/// A string for a reason: Debug-quoted (control characters escaped), cut to 64 characters.
pub fn quoted(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}
