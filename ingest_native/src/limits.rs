//! Size and time limits a payload must respect; each one is a setting on the Python side.

use crate::errors::NativeError;

/// What the decoder accepts. Defaults are the documented settings' defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload, in bytes; a larger message is rejected whole (`too_large`).
    pub max_payload_bytes: usize,
    /// Most readings in one array payload; more rejects the message whole (`too_many_readings`).
    pub max_readings_per_message: usize,
    /// Most unknown keys (kept in `extra`) in one reading (`too_many_keys`).
    pub max_extra_keys: usize,
    /// Deepest nesting of an `extra` value: a scalar is 0, `{}` or `[]` is 1 (`too_deep`).
    pub max_depth: usize,
    /// Longest string (text field, key, or string inside `extra`), in UTF-8 bytes
    /// (`string_too_long`).
    pub max_string_bytes: usize,
    /// Oldest accepted reading time, in seconds before "now" (`ts_out_of_range`).
    pub max_past_seconds: i64,
    /// Newest accepted reading time, in seconds after "now" (`ts_out_of_range`).
    pub max_future_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 262_144,
            max_readings_per_message: 1000,
            max_extra_keys: 64,
            max_depth: 8,
            max_string_bytes: 1024,
            max_past_seconds: 30 * 86_400,
            max_future_seconds: 300,
        }
    }
}

/// Beyond this, a depth limit only invites stack exhaustion; `serde_json` stops at 128 anyway.
const DEPTH_CEILING: usize = 64;
/// A century either way is already far past any partition a deployment keeps.
const SECONDS_CEILING: i64 = 100 * 366 * 86_400;
/// One COPY field length is an i32, and a payload of 1 GiB is not telemetry.
const PAYLOAD_CEILING: usize = 1 << 30;

impl Limits {
    /// Checks that every limit is usable, so a bad setting fails at start-up, not per batch.
    pub fn validate(self) -> Result<Self, NativeError> {
        let bad = |name: &str, why: &str| Err(NativeError::InvalidLimits(format!("{name} {why}")));
        if self.max_payload_bytes == 0 || self.max_payload_bytes > PAYLOAD_CEILING {
            return bad("max_payload_bytes", "must be between 1 and 1073741824");
        }
        if self.max_readings_per_message == 0 {
            return bad("max_readings_per_message", "must be at least 1");
        }
        if self.max_string_bytes == 0 {
            return bad("max_string_bytes", "must be at least 1");
        }
        if self.max_depth > DEPTH_CEILING {
            return bad("max_depth", "must be at most 64");
        }
        if !(0..=SECONDS_CEILING).contains(&self.max_past_seconds) {
            return bad("max_past_seconds", "must be between 0 and 100 years");
        }
        if !(0..=SECONDS_CEILING).contains(&self.max_future_seconds) {
            return bad("max_future_seconds", "must be between 0 and 100 years");
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Limits::default().validate().is_ok());
    }

    #[test]
    fn unusable_limits_are_refused_with_the_setting_name() {
        let cases = [
            Limits {
                max_payload_bytes: 0,
                ..Limits::default()
            },
            Limits {
                max_readings_per_message: 0,
                ..Limits::default()
            },
            Limits {
                max_string_bytes: 0,
                ..Limits::default()
            },
            Limits {
                max_depth: 65,
                ..Limits::default()
            },
            Limits {
                max_past_seconds: -1,
                ..Limits::default()
            },
            Limits {
                max_future_seconds: i64::MAX,
                ..Limits::default()
            },
        ];
        for limits in cases {
            let err = limits.validate().unwrap_err();
            assert!(matches!(err, NativeError::InvalidLimits(ref m) if m.starts_with("max_")));
        }
    }
}
