//! LifeBox ingest core: decodes device telemetry and encodes PostgreSQL binary COPY.
//!
//! This file is the Python boundary and nothing else: it copies inputs into owned Rust data,
//! runs [`decode::decode_batch`] with the GIL released, and turns the result into plain Python
//! values (bytes, ints, str, tuples). The Python side imports it only through
//! `lifebox_grpc.native`; the logic lives in modules that know nothing of Python.

pub mod cel_expr;
// --- expressions (issue 15) ---
pub mod cel_fast;
mod cel_py;
// ---
pub mod copy;
pub mod decode;
pub mod errors;
pub mod extra;
pub mod fields;
// --- calculated metrics (issue 17) ---
pub mod formulas;
mod formulas_py;
// ---
pub mod json;
pub mod limits;
pub mod reject;
pub mod ts;
pub mod value;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use rustc_hash::FxHashMap;

use crate::decode::{BatchFormulas, Message};
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

/// A message's fixed-size part and its payload, borrowed from its Python `bytes` (immutable,
/// so readable with the GIL released: no copy).
struct Head {
    device_id: [u8; 16],
    client_id: [u8; 16],
    received_at_us: i64,
    /// Index in [`OwnedBatch::ids`] of the caller's device id object.
    device_object: usize,
    payload: PyBackedBytes,
}

/// A batch's inputs, owned: safe to read after the GIL is released, even if the caller's list
/// changes meanwhile.
struct OwnedBatch<'py> {
    heads: Vec<Head>,
    /// Every distinct id object of the batch (devices and clients), kept alive so their
    /// addresses stay unique while they key [`IdCache`].
    ids: Vec<Bound<'py, PyAny>>,
}

impl OwnedBatch<'_> {
    fn messages(&self) -> Vec<Message<'_>> {
        self.heads
            .iter()
            .map(|h| Message {
                device_id: h.device_id,
                client_id: h.client_id,
                received_at_us: h.received_at_us,
                payload: &h.payload,
            })
            .collect()
    }
}

/// The 16 bytes of each distinct id object of a batch, read once: a batch repeats the same
/// client and device objects, and reading `uuid.UUID.int` costs far more than a lookup.
#[derive(Default)]
struct IdCache {
    /// Object address → (index in `OwnedBatch::ids`, its bytes).
    by_address: FxHashMap<usize, (usize, [u8; 16])>,
}

impl IdCache {
    fn get<'py>(
        &mut self,
        ids: &mut Vec<Bound<'py, PyAny>>,
        value: Borrowed<'_, 'py, PyAny>,
        what: &str,
    ) -> PyResult<(usize, [u8; 16])> {
        let address = value.as_ptr() as usize;
        if let Some(&hit) = self.by_address.get(&address) {
            return Ok(hit);
        }
        let entry = (ids.len(), uuid_bytes(&value, what)?);
        // Every cached object stays alive in `ids` for the whole call, so no other object
        // can take its address, whatever Python code reading `int` may run.
        ids.push(value.to_owned());
        self.by_address.insert(address, entry);
        Ok(entry)
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

fn copy_inputs<'py>(messages: &Bound<'py, PyList>) -> PyResult<OwnedBatch<'py>> {
    let mut heads = Vec::with_capacity(messages.len());
    let mut ids = Vec::new();
    let mut cache = IdCache::default();
    for item in messages.iter() {
        let t = item.cast::<PyTuple>().map_err(PyErr::from)?;
        if t.len() != 4 {
            return Err(PyErr::from(NativeError::InvalidInput(format!(
                "a message is (device_id, client_id, received_at_us, payload), got {} items",
                t.len()
            ))));
        }
        // Borrowed items: the tuple holds them, and each reference count is an FFI call.
        let payload = t
            .get_borrowed_item(3)?
            .cast::<PyBytes>()
            .map_err(PyErr::from)?
            .to_owned();
        let (device_object, device_id) =
            cache.get(&mut ids, t.get_borrowed_item(0)?, "device_id")?;
        let (_, client_id) = cache.get(&mut ids, t.get_borrowed_item(1)?, "client_id")?;
        heads.push(Head {
            device_id,
            client_id,
            received_at_us: t.get_borrowed_item(2)?.extract()?,
            device_object,
            payload: PyBackedBytes::from(payload),
        });
    }
    Ok(OwnedBatch { heads, ids })
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
    /// Returns `(copy_data, rows, rejects, unknown_fields, latest_us, row_times_us,
    /// rows_per_message, points_copy_data, points, skipped_points)`; see `_ingest_native.pyi`.
    /// Unknown fields are per device and name it by a message index, and `latest_us` is keyed
    /// by the caller's device id objects, so no id object is built. With `formulas`, every
    /// accepted reading is evaluated while it is encoded; `device_types` (one per message, or
    /// None) is what the formulas' type scopes are matched against.
    #[pyo3(signature = (messages, now_us, formulas=None, device_types=None))]
    #[allow(clippy::needless_pass_by_value)] // pyo3 extracts the list into an owned value
    fn decode<'py>(
        &self,
        py: Python<'py>,
        messages: &Bound<'py, PyList>,
        now_us: i64,
        formulas: Option<&Bound<'py, formulas_py::FormulaSet>>,
        device_types: Option<Vec<Option<String>>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let owned = copy_inputs(messages)?;
        let limits = self.limits;
        let inputs = owned.messages();
        let types: Vec<Option<&str>> = device_types
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(Option::as_deref)
            .collect();
        if formulas.is_some() && device_types.is_some() && types.len() != inputs.len() {
            return Err(PyErr::from(NativeError::InvalidInput(format!(
                "{} device types for {} messages",
                types.len(),
                inputs.len()
            ))));
        }
        let set = formulas.map(|f| &f.get().inner);
        let batch = py.detach(|| {
            let with = set.map(|set| BatchFormulas {
                set,
                device_types: &types,
            });
            decode::decode_batch_with_formulas(&inputs, &limits, now_us, with)
        });
        let skipped: Vec<_> = batch
            .points
            .skipped
            .iter()
            .map(|&(f, code, count)| (f, code.as_str(), count))
            .collect();
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
        // Keyed by the caller's own device id objects: nothing to convert on the Python side.
        let latest = PyDict::new(py);
        for l in &batch.latest {
            let device = &owned.ids[owned.heads[l.message_index].device_object];
            latest.set_item(device, l.time_us)?;
        }
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
            PyBytes::new(py, &batch.points.copy_data),
            batch.points.points,
            skipped,
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
    // --- expressions (issue 15) ---
    cel_py::register(m)?;
    // --- calculated metrics (issue 17) ---
    formulas_py::register(m)?;
    // ---
    Ok(())
}
