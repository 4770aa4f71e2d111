//! LifeBox ingest core: decodes device telemetry and encodes PostgreSQL binary COPY.
//!
//! This file is the Python boundary and nothing else: it copies inputs into owned Rust data,
//! runs [`decode::decode_batch`] with the GIL released, and turns the result into plain Python
//! values (bytes, ints, str, tuples). The Python side imports it only through
//! `lifebox_grpc.native`; the logic lives in modules that know nothing of Python.

pub mod copy;
pub mod decode;
pub mod errors;
pub mod extra;
pub mod fields;
pub mod json;
pub mod limits;
pub mod reject;
pub mod ts;
pub mod value;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::decode::Message;
use crate::errors::NativeError;
use crate::limits::Limits;

create_exception!(
    _ingest_native,
    NativeError_,
    PyException,
    "A call the native ingest core refuses."
);
create_exception!(
    _ingest_native,
    LimitsError,
    NativeError_,
    "Decode limits out of range."
);

/// The one mapping from Rust errors to Python exceptions.
impl From<NativeError> for PyErr {
    fn from(err: NativeError) -> PyErr {
        match err {
            NativeError::InvalidLimits(_) => LimitsError::new_err(err.to_string()),
            NativeError::InvalidInput(_) => NativeError_::new_err(err.to_string()),
        }
    }
}

/// The crate version, so the Python side can tell which build it loaded.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `telemetry_events` columns in COPY order, as (name, PostgreSQL type).
#[pyfunction]
fn columns() -> Vec<(&'static str, &'static str)> {
    fields::columns()
}

fn usize_limit(name: &str, v: i64) -> Result<usize, NativeError> {
    usize::try_from(v)
        .map_err(|_| NativeError::InvalidLimits(format!("{name} must not be negative")))
}

/// Decodes batches under fixed limits; safe to share between threads.
#[pyclass(frozen, module = "lifebox_grpc._ingest_native")]
struct Decoder {
    limits: Limits,
}

/// A message's fixed-size part; its payload is `bytes[start..end]` of the batch.
struct Head {
    device_id: [u8; 16],
    client_id: [u8; 16],
    received_at_us: i64,
    start: usize,
    end: usize,
}

/// Owned copies of a batch's inputs: all payloads in one buffer.
struct OwnedBatch {
    heads: Vec<Head>,
    bytes: Vec<u8>,
}

impl OwnedBatch {
    fn messages(&self) -> Vec<Message<'_>> {
        self.heads
            .iter()
            .map(|h| Message {
                device_id: h.device_id,
                client_id: h.client_id,
                received_at_us: h.received_at_us,
                payload: &self.bytes[h.start..h.end],
            })
            .collect()
    }
}

/// A uuid from a `uuid.UUID` (its `int`) or from its 16 bytes.
fn uuid_bytes(value: &Bound<'_, PyAny>, what: &str) -> PyResult<[u8; 16]> {
    let Ok(bytes) = value.cast::<PyBytes>() else {
        // `uuid.UUID.int` is a plain slot: far cheaper than its `bytes` property.
        let int: u128 = value.getattr(intern!(value.py(), "int"))?.extract()?;
        return Ok(int.to_be_bytes());
    };
    bytes.as_bytes().try_into().map_err(|_| {
        PyErr::from(NativeError::InvalidInput(format!(
            "{what} must be 16 bytes, got {}",
            bytes.as_bytes().len()
        )))
    })
}

fn copy_inputs(messages: &Bound<'_, PyList>) -> PyResult<OwnedBatch> {
    let mut heads = Vec::with_capacity(messages.len());
    let mut payloads = Vec::with_capacity(messages.len());
    let mut total = 0;
    for item in messages.iter() {
        let t = item.cast::<PyTuple>().map_err(PyErr::from)?;
        if t.len() != 4 {
            return Err(PyErr::from(NativeError::InvalidInput(format!(
                "a message is (device_id, client_id, received_at_us, payload), got {} items",
                t.len()
            ))));
        }
        let payload = t.get_item(3)?.cast_into::<PyBytes>().map_err(PyErr::from)?;
        let len = payload.as_bytes().len();
        heads.push(Head {
            device_id: uuid_bytes(&t.get_item(0)?, "device_id")?,
            client_id: uuid_bytes(&t.get_item(1)?, "client_id")?,
            received_at_us: t.get_item(2)?.extract()?,
            start: total,
            end: total + len,
        });
        total += len;
        payloads.push(payload);
    }
    // One exact allocation: growing it message by message cost more than the copy itself.
    let mut bytes = Vec::with_capacity(total);
    for payload in &payloads {
        bytes.extend_from_slice(payload.as_bytes());
    }
    Ok(OwnedBatch { heads, bytes })
}

#[pymethods]
impl Decoder {
    #[new]
    #[pyo3(signature = (
        max_payload_bytes, max_readings_per_message, max_extra_keys, max_depth,
        max_string_bytes, max_past_seconds, max_future_seconds,
    ))]
    fn new(
        max_payload_bytes: i64,
        max_readings_per_message: i64,
        max_extra_keys: i64,
        max_depth: i64,
        max_string_bytes: i64,
        max_past_seconds: i64,
        max_future_seconds: i64,
    ) -> PyResult<Self> {
        let limits = (|| {
            Limits {
                max_payload_bytes: usize_limit("max_payload_bytes", max_payload_bytes)?,
                max_readings_per_message: usize_limit(
                    "max_readings_per_message",
                    max_readings_per_message,
                )?,
                max_extra_keys: usize_limit("max_extra_keys", max_extra_keys)?,
                max_depth: usize_limit("max_depth", max_depth)?,
                max_string_bytes: usize_limit("max_string_bytes", max_string_bytes)?,
                max_past_seconds,
                max_future_seconds,
            }
            .validate()
        })()
        .map_err(PyErr::from)?;
        Ok(Decoder { limits })
    }

    /// Decodes a list of `(device_id, client_id, received_at_us, payload)`; ids are
    /// `uuid.UUID` or 16 bytes.
    ///
    /// Returns `(copy_data, rows, rejects, unknown_fields, latest, row_times_us,
    /// rows_per_message)`; see `_ingest_native.pyi`. Ids in `unknown_fields` and `latest` are
    /// message indexes, so the caller reuses its own id objects instead of building new ones.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyList>,
        now_us: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let owned = copy_inputs(messages)?;
        let limits = self.limits;
        let batch = py.detach(move || {
            let messages = owned.messages();
            decode::decode_batch(&messages, &limits, now_us)
        });
        let rejects: Vec<_> = batch
            .rejects
            .iter()
            .map(|r| {
                (
                    r.message_index,
                    r.reading_index,
                    r.code.as_str(),
                    r.reason.as_str(),
                )
            })
            .collect();
        let unknown: Vec<_> = batch
            .unknown_fields
            .iter()
            .map(|u| {
                (
                    u.message_index,
                    u.name.as_str(),
                    u.json_type,
                    u.count,
                    u.example.as_str(),
                )
            })
            .collect();
        let latest: Vec<_> = batch
            .latest
            .iter()
            .map(|l| (l.message_index, l.time_us))
            .collect();
        let times: Vec<u8> = batch
            .row_times_us
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect();
        (
            PyBytes::new(py, &batch.copy_data),
            batch.rows(),
            rejects,
            unknown,
            latest,
            PyBytes::new(py, &times),
            &batch.rows_per_message,
        )
            .into_pyobject(py)
    }
}

#[pymodule]
fn _ingest_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(columns, m)?)?;
    m.add_class::<Decoder>()?;
    m.add("NativeError", m.py().get_type::<NativeError_>())?;
    m.add("LimitsError", m.py().get_type::<LimitsError>())?;
    Ok(())
}
