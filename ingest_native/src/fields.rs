//! The one definition of the `telemetry_events` columns.
//!
//! The migration, the COPY encoder, the decoder and the Python side (`COLUMNS`, `COLUMN_TYPES`)
//! all read this table, so they cannot drift apart: a test on the Python side compares it with
//! the migrated table's catalog.

use crate::json::KeyPattern;

/// How a known telemetry field is typed, in JSON and in PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `double precision`; JSON numbers, integers included.
    Float,
    /// `bigint`; JSON integers (or integral numbers such as `5.0`).
    Int,
    /// `boolean`; JSON `true`/`false` only.
    Bool,
    /// `text`; JSON strings only.
    Text,
}

impl Kind {
    /// The PostgreSQL type name as `information_schema.columns.data_type` spells it.
    pub const fn pg_type(self) -> &'static str {
        match self {
            Kind::Float => "double precision",
            Kind::Int => "bigint",
            Kind::Bool => "boolean",
            Kind::Text => "text",
        }
    }

    /// What a type error says the field expected.
    pub const fn expected(self) -> &'static str {
        match self {
            Kind::Float => "number",
            Kind::Int => "integer",
            Kind::Bool => "boolean",
            Kind::Text => "string",
        }
    }
}

/// A known telemetry field: its device JSON name is also its column name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
}

macro_rules! telemetry_fields {
    ($( $idx:literal => $name:literal : $kind:ident ),* $(,)?) => {
        /// The 37 known fields in column order (ARCHITECTURE.md's order).
        pub const FIELDS: [Field; FIELD_COUNT] = [ $( Field { name: $name, kind: Kind::$kind } ),* ];

        /// The index in [`FIELDS`] of a known field name.
        pub fn field_index(name: &str) -> Option<usize> {
            match name {
                $( $name => Some($idx), )*
                _ => None,
            }
        }
    };
}

/// How many known fields a reading can carry.
pub const FIELD_COUNT: usize = 37;

telemetry_fields! {
    0 => "voltage_l1": Float,
    1 => "voltage_l2": Float,
    2 => "voltage_l3": Float,
    3 => "current_l1": Float,
    4 => "current_l2": Float,
    5 => "current_l3": Float,
    6 => "active_power_w": Float,
    7 => "reactive_power_var": Float,
    8 => "apparent_power_va": Float,
    9 => "power_factor": Float,
    10 => "frequency_hz": Float,
    11 => "energy_import_kwh": Float,
    12 => "energy_export_kwh": Float,
    13 => "temperature_c": Float,
    14 => "humidity_pct": Float,
    15 => "pressure_hpa": Float,
    16 => "battery_v": Float,
    17 => "battery_pct": Float,
    18 => "rssi_dbm": Float,
    19 => "snr_db": Float,
    20 => "latitude": Float,
    21 => "longitude": Float,
    22 => "altitude_m": Float,
    23 => "co2_ppm": Float,
    24 => "pm25_ugm3": Float,
    25 => "uptime_s": Int,
    26 => "packet_seq": Int,
    27 => "tx_bytes": Int,
    28 => "rx_bytes": Int,
    29 => "error_count": Int,
    30 => "reboot_count": Int,
    31 => "relay_on": Bool,
    32 => "door_open": Bool,
    33 => "tamper_alarm": Bool,
    34 => "low_battery": Bool,
    35 => "firmware_version": Text,
    36 => "status": Text,
}

/// Columns the caller fills (time, device, client) or the decoder builds (extra): a reading
/// that names one of them is rejected, because the topic names the device, never the payload.
pub const RESERVED_KEYS: [&str; 4] = ["time", "device_id", "client_id", "extra"];

/// The key that carries the reading's time; it is not a column of its own.
pub const TS_KEY: &str = "ts";

/// Where `ts` sits in [`KEY_PATTERNS`], after the known fields.
pub const TS_SLOT: usize = FIELD_COUNT;

/// `"name":` of each known field in column order, then of `ts`: the decoder's guesses of the
/// next key (see [`KeyPattern`]).
pub static KEY_PATTERNS: [KeyPattern; FIELD_COUNT + 1] = {
    let mut out = [KeyPattern::new(TS_KEY); FIELD_COUNT + 1];
    let mut i = 0;
    while i < FIELD_COUNT {
        out[i] = KeyPattern::new(FIELDS[i].name);
        i += 1;
    }
    out
};

/// Every `telemetry_events` column with its PostgreSQL type, in COPY order.
pub fn columns() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::with_capacity(COLUMN_COUNT);
    out.push(("time", "timestamp with time zone"));
    out.push(("device_id", "uuid"));
    out.push(("client_id", "uuid"));
    out.extend(FIELDS.iter().map(|f| (f.name, f.kind.pg_type())));
    out.push(("extra", "jsonb"));
    out
}

/// Columns in one COPY tuple: time, device_id, client_id, the known fields, extra.
pub const COLUMN_COUNT: usize = FIELD_COUNT + 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_index_agrees_with_the_table() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert_eq!(field_index(f.name), Some(i), "{}", f.name);
        }
        assert_eq!(field_index("ts"), None);
        assert_eq!(field_index("Voltage_l1"), None);
    }

    #[test]
    fn columns_are_in_copy_order() {
        let cols = columns();
        assert_eq!(cols.len(), COLUMN_COUNT);
        assert_eq!(cols[0], ("time", "timestamp with time zone"));
        assert_eq!(cols[3], ("voltage_l1", "double precision"));
        assert_eq!(cols[28], ("uptime_s", "bigint"));
        assert_eq!(cols[34], ("relay_on", "boolean"));
        assert_eq!(cols[39], ("status", "text"));
        assert_eq!(cols[40], ("extra", "jsonb"));
        let mut names: Vec<_> = cols.iter().map(|c| c.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COLUMN_COUNT, "column names are unique");
    }
}
