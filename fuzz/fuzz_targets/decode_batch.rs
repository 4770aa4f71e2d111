//! Feeds arbitrary bytes to the decoder as one or several messages, under tight limits so the
//! fuzzer reaches every limit, and checks the invariants a caller relies on.
#![no_main]

use _ingest_native::copy::HEADER;
use _ingest_native::decode::{decode_batch, Message};
use _ingest_native::limits::Limits;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits; the rest is split into messages at 0xFF bytes, which
    // never occur in UTF-8, so each message can still be valid JSON.
    let Some((&knob, rest)) = data.split_first() else {
        return;
    };
    let limits = if knob & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_payload_bytes: 512,
            max_readings_per_message: 3,
            max_extra_keys: 2,
            max_depth: usize::from(knob >> 5),
            max_string_bytes: 8,
            max_past_seconds: 60,
            max_future_seconds: 60,
        }
    };
    let messages: Vec<Message<'_>> = rest
        .split(|&b| b == 0xFF)
        .enumerate()
        .map(|(i, payload)| Message {
            device_id: [(i % 2) as u8; 16],
            client_id: [7; 16],
            received_at_us: NOW + i as i64,
            payload,
        })
        .collect();
    let batch = decode_batch(&messages, &limits, NOW);
    assert!(batch.copy_data.starts_with(HEADER));
    assert!(batch.copy_data.ends_with(&[0xFF, 0xFF]));
    assert_eq!(batch.rows_per_message.len(), messages.len());
    assert_eq!(batch.rows_per_message.iter().sum::<usize>(), batch.rows());
    for reject in &batch.rejects {
        assert!(reject.message_index < messages.len());
        assert!(!reject.reason.is_empty());
    }
});
