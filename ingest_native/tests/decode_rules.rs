//! Every decoding rule and reject code of `decode_batch`, read back through the COPY bytes.

use _ingest_native::copy::HEADER;
use _ingest_native::decode::{decode_batch, Batch, DeviceLatest, Message};
use _ingest_native::fields::{field_index, COLUMN_COUNT};
use _ingest_native::limits::Limits;
use _ingest_native::reject::RejectCode;
use _ingest_native::ts::{parse_rfc3339, PG_EPOCH_OFFSET_US};

const NOW: i64 = 1_700_000_000_000_000;
const DEVICE: [u8; 16] = [1; 16];
const CLIENT: [u8; 16] = [2; 16];

fn decode_with(payloads: &[&str], limits: &Limits) -> Batch {
    let messages: Vec<_> = payloads
        .iter()
        .map(|p| Message {
            device_id: DEVICE,
            client_id: CLIENT,
            received_at_us: NOW,
            payload: p.as_bytes(),
        })
        .collect();
    decode_batch(&messages, limits, NOW)
}

fn decode(payloads: &[&str]) -> Batch {
    decode_with(payloads, &Limits::default())
}

type Tuple = Vec<Option<Vec<u8>>>;

/// Parses a COPY buffer back into tuples, checking its framing.
fn tuples(copy: &[u8]) -> Vec<Tuple> {
    assert_eq!(&copy[..HEADER.len()], HEADER);
    let mut at = HEADER.len();
    let mut out = Vec::new();
    loop {
        let n = i16::from_be_bytes([copy[at], copy[at + 1]]);
        at += 2;
        if n == -1 {
            assert_eq!(at, copy.len(), "trailer ends the buffer");
            return out;
        }
        assert_eq!(n as usize, COLUMN_COUNT);
        let mut tuple = Vec::new();
        for _ in 0..n {
            let len = i32::from_be_bytes(copy[at..at + 4].try_into().unwrap());
            at += 4;
            if len < 0 {
                tuple.push(None);
            } else {
                tuple.push(Some(copy[at..at + len as usize].to_vec()));
                at += len as usize;
            }
        }
        out.push(tuple);
    }
}

fn column(name: &str) -> usize {
    match name {
        "time" => 0,
        "device_id" => 1,
        "client_id" => 2,
        "extra" => COLUMN_COUNT - 1,
        _ => field_index(name).unwrap() + 3,
    }
}

fn f64_at(t: &Tuple, name: &str) -> f64 {
    f64::from_be_bytes(t[column(name)].clone().unwrap().try_into().unwrap())
}

fn i64_at(t: &Tuple, name: &str) -> i64 {
    i64::from_be_bytes(t[column(name)].clone().unwrap().try_into().unwrap())
}

fn text_at(t: &Tuple, name: &str) -> String {
    String::from_utf8(t[column(name)].clone().unwrap()).unwrap()
}

fn time_at(t: &Tuple) -> i64 {
    i64_at(t, "time") + PG_EPOCH_OFFSET_US
}

fn codes(batch: &Batch) -> Vec<(usize, Option<usize>, &'static str)> {
    batch
        .rejects
        .iter()
        .map(|r| (r.message_index, r.reading_index, r.code.as_str()))
        .collect()
}

fn only_reject(payload: &str) -> (Option<usize>, RejectCode, String) {
    let batch = decode(&[payload]);
    assert_eq!(batch.rows(), 0, "{payload}");
    assert_eq!(batch.rejects.len(), 1, "{payload}: {:?}", batch.rejects);
    let r = &batch.rejects[0];
    (r.reading_index, r.code, r.reason.clone())
}

#[test]
fn a_reading_with_every_kind_of_field_is_encoded() {
    let batch = decode(&[
        r#"{"ts": 1700000000123, "voltage_l1": 230.5, "temperature_c": 21,
        "uptime_s": -9223372036854775808, "relay_on": true, "door_open": false,
        "status": "ok \u00e9 \ud83d\ude00", "humidity_pct": null}"#,
    ]);
    assert!(batch.rejects.is_empty(), "{:?}", batch.rejects);
    let rows = tuples(&batch.copy_data);
    assert_eq!(rows.len(), 1);
    let t = &rows[0];
    assert_eq!(time_at(t), 1_700_000_000_123_000);
    assert_eq!(t[1].as_deref(), Some(&DEVICE[..]));
    assert_eq!(t[2].as_deref(), Some(&CLIENT[..]));
    assert!((f64_at(t, "voltage_l1") - 230.5).abs() < f64::EPSILON);
    assert!((f64_at(t, "temperature_c") - 21.0).abs() < f64::EPSILON);
    assert_eq!(i64_at(t, "uptime_s"), i64::MIN);
    assert_eq!(t[column("relay_on")], Some(vec![1]));
    assert_eq!(t[column("door_open")], Some(vec![0]));
    assert_eq!(text_at(t, "status"), "ok é 😀");
    assert_eq!(t[column("humidity_pct")], None);
    assert_eq!(t[column("voltage_l2")], None);
    assert_eq!(t[column("extra")], None);
    assert_eq!(batch.row_times_us, vec![1_700_000_000_123_000]);
    assert_eq!(
        batch.latest,
        vec![DeviceLatest {
            device_id: DEVICE,
            time_us: 1_700_000_000_123_000,
            message_index: 0
        }]
    );
    assert_eq!(batch.rows_per_message, vec![1]);
}

#[test]
fn absent_ts_means_the_time_of_receipt_and_rfc3339_offsets_apply() {
    let batch = decode(&[r#"[{"voltage_l1": 1}, {"ts": "2023-11-14T23:13:20.5+01:00"}]"#]);
    assert!(batch.rejects.is_empty(), "{:?}", batch.rejects);
    let rows = tuples(&batch.copy_data);
    assert_eq!(time_at(&rows[0]), NOW);
    assert_eq!(time_at(&rows[1]), NOW + 500_000);
    assert_eq!(batch.latest[0].time_us, NOW + 500_000);
}

#[test]
fn unknown_keys_go_to_extra_verbatim_and_in_order() {
    let batch = decode(&[
        r#"{"ts": 1700000000000, "zeta": {"b": [1, 2.50, "x"], "a": {}}, "alpha": 1e2, "v": -0.0}"#,
        r#"{"ts": 1700000000001, "zeta": "again"}"#,
    ]);
    assert!(batch.rejects.is_empty(), "{:?}", batch.rejects);
    let rows = tuples(&batch.copy_data);
    let extra = rows[0][column("extra")].clone().unwrap();
    assert_eq!(extra[0], 1, "jsonb version byte");
    assert_eq!(
        std::str::from_utf8(&extra[1..]).unwrap(),
        r#"{"zeta":{"b": [1, 2.50, "x"], "a": {}},"alpha":1e2,"v":-0.0}"#
    );
    let names: Vec<_> = batch
        .unknown_fields
        .iter()
        .map(|u| (u.name.as_str(), u.json_type, u.count, u.example.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("zeta", "object", 2, r#"{"b": [1, 2.50, "x"], "a": {}}"#),
            ("alpha", "number", 1, "1e2"),
            ("v", "number", 1, "-0.0"),
        ]
    );
    assert!(batch.unknown_fields.iter().all(|u| u.client_id == CLIENT));
}

#[test]
fn unknown_fields_are_counted_per_device() {
    const OTHER: [u8; 16] = [3; 16];
    let payloads = [
        r#"{"ts": 1700000000000, "mood": "ok"}"#,
        r#"{"ts": 1700000000000, "mood": 7}"#,
        r#"{"ts": 1700000000001, "mood": "fine"}"#,
    ];
    let messages: Vec<_> = payloads
        .iter()
        .zip([DEVICE, OTHER, DEVICE])
        .map(|(p, device_id)| Message {
            device_id,
            client_id: CLIENT,
            received_at_us: NOW,
            payload: p.as_bytes(),
        })
        .collect();
    let batch = decode_batch(&messages, &Limits::default(), NOW);
    let seen: Vec<_> = batch
        .unknown_fields
        .iter()
        .map(|u| {
            (
                u.device_id,
                u.client_id,
                u.message_index,
                u.json_type,
                u.count,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (DEVICE, CLIENT, 0, "string", 2),
            (OTHER, CLIENT, 1, "number", 1),
        ]
    );
    assert_eq!(batch.unknown_fields[1].example, "7");
}

#[test]
fn an_escaped_unknown_key_is_written_as_valid_json() {
    let batch = decode(&[r#"{"ts": 1700000000000, "a\"b\u00e9": 1}"#]);
    let rows = tuples(&batch.copy_data);
    let extra = rows[0][column("extra")].clone().unwrap();
    assert_eq!(std::str::from_utf8(&extra[1..]).unwrap(), "{\"a\\\"bé\":1}");
    assert_eq!(batch.unknown_fields[0].name, "a\"bé");
}

#[test]
fn a_bad_reading_does_not_take_its_neighbours_with_it() {
    let batch = decode(&[
        r#"[{"ts": 1700000000000, "voltage_l1": 1}, {"ts": 1700000000001, "voltage_l1": "x"},
            {"ts": 1700000000002, "uptime_s": 1.5}, 7, {"ts": 1700000000003}]"#,
        r#"{"ts": 1700000000004, "relay_on": 1}"#,
        r#"{"ts": 1700000000005}"#,
    ]);
    assert_eq!(
        codes(&batch),
        vec![
            (0, Some(1), "type_error"),
            (0, Some(2), "type_error"),
            (0, Some(3), "not_object"),
            (1, Some(0), "type_error"),
        ]
    );
    assert_eq!(
        batch.rejects[0].reason,
        "field voltage_l1: expected number, got string"
    );
    assert_eq!(
        batch.rejects[2].reason,
        "reading is a number; expected an object"
    );
    assert_eq!(batch.rows(), 3);
    assert_eq!(batch.rows_per_message, vec![2, 0, 1]);
    let times: Vec<_> = tuples(&batch.copy_data).iter().map(time_at).collect();
    assert_eq!(
        times,
        vec![
            1_700_000_000_000_000,
            1_700_000_000_003_000,
            1_700_000_000_005_000
        ]
    );
}

#[test]
fn a_message_that_is_not_json_is_rejected_whole_and_leaves_no_rows() {
    let batch = decode(&[
        r#"{"ts": 1700000000000}"#,
        r#"[{"ts": 1700000000001, "voltage_l1": 1}, {"ts": 1700000000002, "voltage_l1": ]"#,
        r#"{"ts": 1700000000003}"#,
    ]);
    assert_eq!(codes(&batch), vec![(1, None, "invalid_json")]);
    assert_eq!(batch.rows_per_message, vec![1, 0, 1]);
    assert_eq!(tuples(&batch.copy_data).len(), 2);
    // The rolled-back reading's time is free again for a later message.
    let again = decode(&[r#"[{"ts": 1700000000001}, ]"#, r#"{"ts": 1700000000001}"#]);
    assert_eq!(codes(&again), vec![(0, None, "invalid_json")]);
    assert_eq!(again.rows(), 1);
}

#[test]
fn whole_message_rejects_have_their_codes() {
    let cases: [(&str, &str); 9] = [
        ("{\"voltage_l1\": NaN}", "invalid_json"),
        ("{\"voltage_l1\": Infinity}", "invalid_json"),
        ("{} {}", "invalid_json"),
        ("", "invalid_json"),
        ("\"\\ud800\"", "invalid_json"),
        ("42", "not_object"),
        ("\"x\"", "not_object"),
        ("null", "not_object"),
        ("{\"a\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", "invalid_json"),
    ];
    for (payload, code) in cases {
        let (reading, got, reason) = only_reject(payload);
        assert_eq!((reading, got.as_str()), (None, code), "{payload}: {reason}");
        assert!(!reason.is_empty());
    }
    let (_, _, reason) = only_reject("42");
    assert_eq!(
        reason,
        "payload is a number; expected an object or an array of objects"
    );
}

#[test]
fn invalid_utf8_rejects_the_message() {
    let messages = [Message {
        device_id: DEVICE,
        client_id: CLIENT,
        received_at_us: NOW,
        payload: b"{\"status\": \"\xff\"}",
    }];
    let batch = decode_batch(&messages, &Limits::default(), NOW);
    assert_eq!(codes(&batch), vec![(0, None, "invalid_utf8")]);
    assert_eq!(
        batch.rejects[0].reason,
        "payload is not UTF-8 (invalid byte at offset 12)"
    );
}

#[test]
fn size_and_count_limits_reject_the_message() {
    let limits = Limits {
        max_payload_bytes: 30,
        max_readings_per_message: 2,
        ..Limits::default()
    };
    let batch = decode_with(
        &[
            "[{}, {}, {}]",
            "[{}, {}]",
            &format!("{{\"x\": \"{}\"}}", "a".repeat(30)),
        ],
        &limits,
    );
    assert_eq!(
        codes(&batch),
        // Both readings of message 1 have the receipt time: the second is a duplicate.
        vec![
            (0, None, "too_many_readings"),
            (1, Some(1), "duplicate_ts"),
            (2, None, "too_large")
        ]
    );
    assert_eq!(
        batch.rejects[0].reason,
        "array of 3 readings exceeds the limit of 2"
    );
    assert_eq!(
        batch.rejects[2].reason,
        "payload of 39 bytes exceeds the limit of 30"
    );
    assert_eq!(batch.rows(), 1);
}

#[test]
fn an_array_of_the_maximum_is_accepted() {
    let readings: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                "{{\"ts\": {}, \"packet_seq\": {i}}}",
                1_700_000_000_000_i64 + i
            )
        })
        .collect();
    let payload = format!("[{}]", readings.join(","));
    let batch = decode(&[&payload]);
    assert!(batch.rejects.is_empty());
    assert_eq!(batch.rows(), 1000);
    let rows = tuples(&batch.copy_data);
    assert_eq!(i64_at(&rows[999], "packet_seq"), 999);
    assert_eq!(decode(&["[]"]).rows(), 0);
}

#[test]
fn reading_level_rejects_have_their_codes_and_reasons() {
    let long = "a".repeat(1025);
    let deep = format!("{}1{}", "[".repeat(9), "]".repeat(9));
    let many: Vec<String> = (0..65).map(|i| format!("\"k{i}\": {i}")).collect();
    let cases = [
        (r#"{"voltage_l1": true}"#.to_owned(), "type_error", "field voltage_l1: expected number, got boolean"),
        (r#"{"ts": "yesterday"}"#.to_owned(), "ts_invalid", "ts \"yesterday\" is not an RFC 3339 date-time with offset"),
        (r#"{"ts": null}"#.to_owned(), "ts_invalid", "ts: expected epoch milliseconds or an RFC 3339 string, got null"),
        (r#"{"ts": "1999-01-01T00:00:00Z"}"#.to_owned(), "ts_out_of_range", "ts 1999-01-01T00:00:00Z out of range (accepted from 2023-10-15T22:13:20Z to 2023-11-14T22:18:20Z)"),
        (r#"{"ts": 1700000300001}"#.to_owned(), "ts_out_of_range", "ts 2023-11-14T22:18:20.001000Z out of range (accepted from 2023-10-15T22:13:20Z to 2023-11-14T22:18:20Z)"),
        (r#"{"voltage_l1": 1, "voltage_l1": 2}"#.to_owned(), "duplicate_key", "key \"voltage_l1\" appears twice"),
        (r#"{"ts": 1, "ts": 2}"#.to_owned(), "duplicate_key", "key \"ts\" appears twice"),
        (r#"{"x": 1, "x": 1}"#.to_owned(), "duplicate_key", "key \"x\" appears twice"),
        (r#"{"x": {"y": 1, "y": 2}}"#.to_owned(), "duplicate_key", "key \"x\": nested key \"y\" appears twice"),
        (r#"{"device_id": "00000000-0000-0000-0000-000000000000"}"#.to_owned(), "reserved_key", "key device_id is reserved: the topic names the device"),
        (r#"{"time": 1}"#.to_owned(), "reserved_key", "key time is reserved: the topic names the device"),
        (r#"{"client_id": 1}"#.to_owned(), "reserved_key", "key client_id is reserved: the topic names the device"),
        (r#"{"extra": {}}"#.to_owned(), "reserved_key", "key extra is reserved: the topic names the device"),
        (format!(r#"{{"status": "{long}"}}"#), "string_too_long", "field status: string of 1025 bytes exceeds the limit of 1024"),
        (format!(r#"{{"note": "{long}"}}"#), "string_too_long", "key \"note\": string of 1025 bytes exceeds the limit of 1024"),
        (format!(r#"{{"{long}": 1}}"#), "string_too_long", ""),
        (r#"{"status": "a\u0000b"}"#.to_owned(), "invalid_string", "field status: string contains U+0000, which PostgreSQL cannot store"),
        (r#"{"a\u0000": 1}"#.to_owned(), "invalid_string", "key \"a\\0\" contains U+0000, which PostgreSQL cannot store"),
        (format!(r#"{{"gps": {deep}}}"#), "too_deep", "key \"gps\": nested deeper than 8 levels"),
        (format!("{{{}}}", many.join(",")), "too_many_keys", "more than 64 unknown keys"),
        (r#"{"big": 1e999}"#.to_owned(), "non_finite", "key \"big\": number out of range"),
    ];
    for (payload, code, reason) in cases {
        let (reading, got, got_reason) = only_reject(&payload);
        assert_eq!(
            (reading, got.as_str()),
            (Some(0), code),
            "{payload}: {got_reason}"
        );
        if !reason.is_empty() {
            assert_eq!(got_reason, reason);
        }
    }
}

#[test]
fn limits_are_inclusive() {
    let at_depth = format!("{{\"gps\": {}1{}}}", "[".repeat(8), "]".repeat(8));
    let keys: Vec<String> = (0..64).map(|i| format!("\"k{i}\": {i}")).collect();
    let batch = decode(&[
        &format!(
            r#"{{"ts": 1700000000000, "status": "{}"}}"#,
            "é".repeat(512)
        ),
        &format!(
            r#"{{"ts": 1700000000001, "gps": {}}}"#,
            &at_depth[8..at_depth.len() - 1]
        ),
        &format!("{{\"ts\": 1700000000002, {}}}", keys.join(",")),
        r#"{"ts": 1697407999999}"#,
        r#"{"ts": 1697408000000}"#,
        r#"{"ts": 1700000300000}"#,
    ]);
    assert_eq!(codes(&batch), vec![(3, Some(0), "ts_out_of_range")]);
    assert_eq!(batch.rows(), 5);
}

#[test]
fn a_repeated_device_time_keeps_the_first_reading() {
    let batch = decode(&[
        r#"[{"ts": 1700000000000, "packet_seq": 1}, {"ts": "2023-11-14T22:13:20Z", "packet_seq": 2}]"#,
        r#"{"ts": 1700000000000, "packet_seq": 3}"#,
    ]);
    assert_eq!(
        codes(&batch),
        vec![(0, Some(1), "duplicate_ts"), (1, Some(0), "duplicate_ts")]
    );
    assert_eq!(
        batch.rejects[0].reason,
        "ts 2023-11-14T22:13:20Z: an earlier reading of this device in the batch has the same time"
    );
    let rows = tuples(&batch.copy_data);
    assert_eq!(rows.len(), 1);
    assert_eq!(i64_at(&rows[0], "packet_seq"), 1);
    // Another device may share the time.
    let messages = [
        Message {
            device_id: DEVICE,
            client_id: CLIENT,
            received_at_us: NOW,
            payload: b"{}",
        },
        Message {
            device_id: [9; 16],
            client_id: CLIENT,
            received_at_us: NOW,
            payload: b"{}",
        },
    ];
    assert_eq!(decode_batch(&messages, &Limits::default(), NOW).rows(), 2);
}

#[test]
fn the_first_fault_of_a_reading_decides_and_later_keys_are_still_parsed() {
    let (_, code, _) = only_reject(r#"{"voltage_l1": "x", "device_id": 1, "voltage_l1": 2}"#);
    assert_eq!(code, RejectCode::TypeError);
    let batch = decode(&[
        r#"[{"voltage_l1": "x", "nested": {"a": [1, {"b": 2}]}}, {"ts": 1700000000000}]"#,
    ]);
    assert_eq!(codes(&batch), vec![(0, Some(0), "type_error")]);
    assert_eq!(batch.rows(), 1);
    assert!(
        batch.unknown_fields.is_empty(),
        "rejected readings are not catalogued"
    );
}

#[test]
fn unknown_fields_of_a_rolled_back_message_are_not_counted() {
    let batch = decode(&[r#"[{"ts": 1700000000000, "x": 1}, oops]"#, r#"{"x": "s"}"#]);
    assert_eq!(batch.unknown_fields.len(), 1);
    assert_eq!(batch.unknown_fields[0].count, 1);
    assert_eq!(batch.unknown_fields[0].json_type, "string");
}

#[test]
fn latest_is_per_device_across_messages() {
    let messages = [
        Message {
            device_id: DEVICE,
            client_id: CLIENT,
            received_at_us: NOW,
            payload: br#"{"ts": 1700000000000}"#,
        },
        Message {
            device_id: [7; 16],
            client_id: CLIENT,
            received_at_us: NOW,
            payload: br#"{"ts": 1699999999000}"#,
        },
        Message {
            device_id: DEVICE,
            client_id: CLIENT,
            received_at_us: NOW,
            payload: br#"{"ts": 1699999990000}"#,
        },
    ];
    let mut latest = decode_batch(&messages, &Limits::default(), NOW).latest;
    latest.sort_unstable();
    assert_eq!(
        latest,
        vec![
            DeviceLatest {
                device_id: DEVICE,
                time_us: 1_700_000_000_000_000,
                message_index: 0
            },
            DeviceLatest {
                device_id: [7; 16],
                time_us: 1_699_999_999_000_000,
                message_index: 1
            },
        ]
    );
}

#[test]
fn rfc3339_variants_agree() {
    let expected = parse_rfc3339("2023-11-14T22:13:20.25Z").unwrap();
    for ts in [
        "2023-11-14T22:13:20.25Z",
        "2023-11-15T03:43:20.250+05:30",
        "2023-11-14t17:13:20.250000-05:00",
    ] {
        let batch = decode(&[&format!("{{\"ts\": \"{ts}\"}}")]);
        assert_eq!(batch.row_times_us, vec![expected], "{ts}");
    }
}

/// Every key in column order, as the decoder guesses them, with one value per kind.
fn in_column_order(ts_ms: i64) -> String {
    use _ingest_native::fields::{Kind, FIELDS};
    use std::fmt::Write;
    let mut out = format!("{{\"ts\":{ts_ms}");
    for f in FIELDS {
        let value = match f.kind {
            Kind::Float => "1.5",
            Kind::Int => "7",
            Kind::Bool => "true",
            Kind::Text => "\"ok\"",
        };
        write!(out, ",\"{}\":{value}", f.name).unwrap();
    }
    out.push('}');
    out
}

#[test]
fn keys_decode_alike_whether_guessed_or_not() {
    let ordered = in_column_order(1_700_000_000_000);
    // Same members, spelled so that no guess matches: whitespace before each colon.
    let spaced = ordered.replace("\":", "\" :");
    // Same members in reverse order.
    let inner = &ordered[1..ordered.len() - 1];
    let reversed = format!(
        "{{{}}}",
        inner.split(',').rev().collect::<Vec<_>>().join(",")
    );
    let expected = decode(&[&ordered]);
    assert!(expected.rejects.is_empty(), "{:?}", expected.rejects);
    let row = &tuples(&expected.copy_data)[0];
    assert_eq!(f64_at(row, "voltage_l1").to_bits(), 1.5_f64.to_bits());
    assert_eq!(i64_at(row, "uptime_s"), 7);
    assert_eq!(row[column("relay_on")].as_deref(), Some(&[1][..]));
    assert_eq!(text_at(row, "status"), "ok");
    for other in [&spaced, &reversed] {
        assert_eq!(decode(&[other]).copy_data, expected.copy_data, "{other}");
    }
}

#[test]
fn a_guessed_key_seen_twice_is_a_duplicate() {
    // voltage_l1 comes back where voltage_l2 is guessed, and ts comes back at the end.
    let (_, code, reason) = only_reject(r#"{"ts":1700000000000,"voltage_l1":1,"voltage_l1":2}"#);
    assert_eq!(
        (code, reason.as_str()),
        (RejectCode::DuplicateKey, "key \"voltage_l1\" appears twice")
    );
    let (_, code, _) = only_reject(r#"{"ts":1700000000000,"voltage_l1":1,"ts":1700000000000}"#);
    assert_eq!(code, RejectCode::DuplicateKey);
}

#[test]
fn a_key_that_only_starts_like_a_guess_is_unknown() {
    let batch = decode(&[r#"{"ts":1700000000000,"voltage_l1x":1,"voltage_l":2,"status":"a"}"#]);
    assert!(batch.rejects.is_empty(), "{:?}", batch.rejects);
    let rows = tuples(&batch.copy_data);
    assert_eq!(
        rows[0][column("extra")].as_deref(),
        Some(&b"\x01{\"voltage_l1x\":1,\"voltage_l\":2}"[..])
    );
    assert_eq!(rows[0][column("voltage_l1")], None);
    assert_eq!(text_at(&rows[0], "status"), "a");
}
