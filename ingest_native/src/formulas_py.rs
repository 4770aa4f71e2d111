//! The Python face of [`crate::formulas`]: a `FormulaSet` built once per change of a batch's
//! formulas (from already checked `Expression`s, so nothing is compiled per batch) and passed
//! to `Decoder.decode`, which evaluates it while it encodes the batch.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::cel_py::Expression;
use crate::copy::Value;
use crate::errors::NativeError;
use crate::fields::FIELD_COUNT;
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

/// Evaluates one expression as ingest would on `rows` stored readings: `columns` are (name,
/// is_bool, little-endian f64 bytes with NaN for none) of known fields. Returns (values as f64
/// bytes, NaN where no point; the skip code of each row, None where a point).
#[pyfunction]
fn evaluate_formula<'py>(
    py: Python<'py>,
    expression: &Bound<'py, Expression>,
    columns: &Bound<'py, PyList>,
    rows: usize,
) -> PyResult<(Bound<'py, pyo3::types::PyBytes>, Vec<Option<&'static str>>)> {
    let mut owned: Vec<(usize, bool, Vec<f64>)> = Vec::with_capacity(columns.len());
    for item in columns.iter() {
        let (name, is_bool, values): (String, bool, pyo3::pybacked::PyBackedBytes) =
            item.extract()?;
        let Some(index) = crate::fields::field_index(&name) else {
            return Err(PyErr::from(NativeError::InvalidInput(format!(
                "{name} is not a known field"
            ))));
        };
        if values.len() != rows * 8 {
            return Err(PyErr::from(NativeError::InvalidInput(format!(
                "column {name} holds {} bytes; {rows} rows take {}",
                values.len(),
                rows * 8
            ))));
        }
        let values = values
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect();
        owned.push((index, is_bool, values));
    }
    let nil = [0; 16];
    let set = formulas::FormulaSet::new(
        vec![Formula {
            id: nil,
            version: 1,
            client_id: nil,
            scope: Scope::Tenant,
            metric: String::new(),
            unit: None,
            expr: expression.get().inner.clone(),
        }],
        Duration::MAX,
    );
    let (values, codes): (Vec<f64>, Vec<Option<&'static str>>) = py.detach(|| {
        (0..rows)
            .map(|row| {
                let mut reading = [Value::Null; FIELD_COUNT];
                for (index, is_bool, values) in &owned {
                    let v = values[row];
                    if !v.is_nan() {
                        reading[*index] = if *is_bool {
                            Value::Bool(v != 0.0)
                        } else {
                            Value::Float(v)
                        };
                    }
                }
                match set.value(0, &reading) {
                    Ok(x) => (x, None),
                    Err(code) => (f64::NAN, Some(code.as_str())),
                }
            })
            .unzip()
    });
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Ok((pyo3::types::PyBytes::new(py, &bytes), codes))
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
    m.add_function(wrap_pyfunction!(evaluate_formula, m)?)?;
    m.add_function(wrap_pyfunction!(point_columns, m)?)?;
    m.add_function(wrap_pyfunction!(point_skip_codes, m)?)?;
    m.add_class::<FormulaSet>()?;
    Ok(())
}
