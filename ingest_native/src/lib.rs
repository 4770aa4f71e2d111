//! LifeBox ingest core: decodes device telemetry and encodes PostgreSQL binary COPY.
//!
//! The Python side imports this module only through `lifebox_grpc.native`.

use pyo3::prelude::*;

/// The crate version, so the Python side can tell which build it loaded.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _ingest_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
