//! Formulas evaluated by `decode_batch_with_formulas`: points for accepted readings only, in
//! step with the telemetry rows, typed by the device's scope.

use std::time::Duration;

use _ingest_native::cel_expr::check;
use _ingest_native::decode::{decode_batch_with_formulas, BatchFormulas, Message};
use _ingest_native::formulas::{Formula, FormulaSet, Scope, SkipCode};
use _ingest_native::limits::Limits;

const NOW: i64 = 1_700_000_000_000_000;
const CLIENT: [u8; 16] = [2; 16];

fn formula(id: u8, source: &str, scope: Scope) -> Formula {
    Formula {
        id: [id; 16],
        version: 1,
        client_id: CLIENT,
        scope,
        metric: format!("m{id}"),
        unit: None,
        expr: check(source).unwrap(),
    }
}

fn message(device: u8, payload: &str) -> Message<'_> {
    Message {
        device_id: [device; 16],
        client_id: CLIENT,
        received_at_us: NOW,
        payload: payload.as_bytes(),
    }
}

#[test]
fn points_follow_the_accepted_readings_only() {
    let set = FormulaSet::new(
        vec![
            formula(1, "temperature_c * 2", Scope::Tenant),
            formula(
                2,
                "humidity_pct / temperature_c",
                Scope::DeviceType("room".into()),
            ),
        ],
        Duration::from_secs(1),
    );
    let messages = [
        // Two readings, one rejected (a type error): one reading's points.
        message(
            7,
            r#"[{"temperature_c": 2, "humidity_pct": 4}, {"temperature_c": "x"}]"#,
        ),
        // Whole message rejected after a good reading: none of its points.
        message(
            8,
            r#"[{"temperature_c": 3, "humidity_pct": 0}, {"temperature_c": 1"#,
        ),
        // Division by zero on a device of the type: skipped, counted.
        message(9, r#"{"temperature_c": 0, "humidity_pct": 5}"#),
    ];
    let types = [Some("room"), Some("room"), Some("room")];
    let batch = decode_batch_with_formulas(
        &messages,
        &Limits::default(),
        NOW,
        Some(BatchFormulas {
            set: &set,
            device_types: &types,
        }),
    );
    assert_eq!(batch.rows(), 2);
    // Device 7: m1 and m2; device 9: m1 (0 * 2), m2 skipped (5 / 0).
    assert_eq!(batch.points.points, 3);
    assert_eq!(batch.points.skipped, vec![(1, SkipCode::NonFinite, 1)]);
}

#[test]
fn without_formulas_there_are_no_points() {
    let set = FormulaSet::new(Vec::new(), Duration::from_secs(1));
    let messages = [message(7, r#"{"temperature_c": 2}"#)];
    let batch = decode_batch_with_formulas(
        &messages,
        &Limits::default(),
        NOW,
        Some(BatchFormulas {
            set: &set,
            device_types: &[],
        }),
    );
    assert_eq!(batch.rows(), 1);
    assert_eq!(batch.points.points, 0);
    assert!(batch.points.copy_data.is_empty());
}
