//! The Python face of [`crate::formulas`]: a `FormulaSet` built once per change of a batch's
//! formulas (from already checked `Expression`s, so nothing is compiled per batch) and passed
//! to `Decoder.decode`, which evaluates it while it encodes the batch.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::cel_py::Expression;
use crate::errors::NativeError;
use crate::formulas::{self, Formula, Scope, SkipCode};

/// Enabled formulas, compiled; immutable, shareable between threads.
#[pyclass(frozen, module = "lifebox_grpc._ingest_native")]
pub(crate) struct FormulaSet {
    pub(crate) inner: formulas::FormulaSet,
}

fn id16(bytes: &[u8], what: &str) -> Result<[u8; 16], NativeError> {
    bytes
        .try_into()
        .map_err(|_| NativeError::InvalidInput(format!("{what} must be 16 bytes")))
}

type FormulaTuple<'py> = (
    Vec<u8>,
    i64,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<String>,
    String,
    Option<String>,
    Bound<'py, Expression>,
);

#[pymethods]
impl FormulaSet {
    /// `formulas` are (id, version, client_id, device_id or None, device_type or None,
    /// metric, unit or None, Expression), ids as 16 bytes; `budget_us` bounds one batch's
    /// evaluation time.
    #[new]
    fn new(formulas: &Bound<'_, PyList>, budget_us: u64) -> PyResult<Self> {
        let mut out = Vec::with_capacity(formulas.len());
        for item in formulas.iter() {
            let (id, version, client, device, device_type, metric, unit, expr): FormulaTuple<'_> =
                item.extract()?;
            let scope = match (device, device_type) {
                (Some(d), _) => Scope::Device(id16(&d, "device_id")?),
                (None, Some(t)) => Scope::DeviceType(t),
                (None, None) => Scope::Tenant,
            };
            out.push(Formula {
                id: id16(&id, "id")?,
                version,
                client_id: id16(&client, "client_id")?,
                scope,
                metric,
                unit,
                expr: expr.get().inner.clone(),
            });
        }
        Ok(FormulaSet {
            inner: formulas::FormulaSet::new(out, Duration::from_micros(budget_us)),
        })
    }

    fn __len__(&self) -> usize {
        self.inner.formulas().len()
    }
}

/// `device_data_points` columns in COPY order, as (name, PostgreSQL type).
#[pyfunction]
fn point_columns() -> Vec<(&'static str, &'static str)> {
    formulas::POINT_COLUMNS.to_vec()
}

/// Every skipped-point code, in a fixed order.
#[pyfunction]
fn point_skip_codes() -> Vec<&'static str> {
    SkipCode::ALL.iter().map(|c| c.as_str()).collect()
}

/// Adds this module's functions and class to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(point_columns, m)?)?;
    m.add_function(wrap_pyfunction!(point_skip_codes, m)?)?;
    m.add_class::<FormulaSet>()?;
    Ok(())
}
