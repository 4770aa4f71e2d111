//! The Python face of [`crate::cel_expr`]: checking an expression, and evaluating checked
//! expressions over columns of doubles with the GIL released. Only plain values cross:
//! strings, ints, and `bytes` of little-endian f64 (NaN for "no value").

use std::time::Duration;

use pyo3::create_exception;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::cel_expr::{self, CheckedExpr, Column, ColumnKind, ExprErrorCode, ExprProblem};
use crate::errors::NativeError;

create_exception!(
    _ingest_native,
    ExpressionError,
    pyo3::exceptions::PyValueError,
    "An expression that cannot be checked; args[0] lists its problems as (code, start, end, \
     message)."
);

type Problem = (&'static str, usize, usize, String);

fn problems_of(problems: Vec<ExprProblem>) -> Vec<Problem> {
    problems
        .into_iter()
        .map(|p| (p.code.as_str(), p.start, p.end, p.message))
        .collect()
}

/// Every expression problem code, in a fixed order.
#[pyfunction]
fn expression_error_codes() -> Vec<&'static str> {
    ExprErrorCode::ALL.iter().map(|c| c.as_str()).collect()
}

/// The functions an expression may call, as (name, arity).
#[pyfunction]
fn expression_functions() -> Vec<(&'static str, usize)> {
    cel_expr::FUNCTIONS.to_vec()
}

/// Checks `source` without raising: (fields it reads, sorted; problems). A valid expression
/// has no problems; an invalid one no fields.
#[pyfunction]
fn check_expression(source: &str) -> (Vec<String>, Vec<Problem>) {
    match cel_expr::check(source) {
        Ok(expr) => (expr.fields, Vec::new()),
        Err(problems) => (Vec::new(), problems_of(problems)),
    }
}

/// A checked expression; immutable, shareable between threads.
#[pyclass(frozen, module = "lifebox_grpc._ingest_native")]
pub(crate) struct Expression {
    pub(crate) inner: CheckedExpr,
}

#[pymethods]
impl Expression {
    /// Checks `source`; raises ExpressionError with every problem when it is not valid.
    #[new]
    fn new(source: &str) -> PyResult<Self> {
        cel_expr::check(source)
            .map(|inner| Expression { inner })
            .map_err(|problems| ExpressionError::new_err((problems_of(problems),)))
    }

    #[getter]
    fn source(&self) -> &str {
        &self.inner.source
    }

    /// The fields the expression reads, sorted, each once.
    #[getter]
    fn fields(&self) -> Vec<String> {
        self.inner.fields.clone()
    }
}

fn f64s(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
        .collect()
}

/// Evaluates every expression on every row: `columns` are (name, is_bool, values as
/// little-endian f64 bytes, NaN for none), each holding `rows` values. Returns (values, rows
/// evaluated): values are f64 bytes laid out expression-major (`e * rows + r`), 1.0/0.0 for
/// true/false, NaN when unknown; fewer rows than asked were evaluated when `budget_us` ran out.
#[pyfunction]
fn evaluate<'py>(
    py: Python<'py>,
    expressions: &Bound<'py, PyList>,
    columns: &Bound<'py, PyList>,
    rows: usize,
    budget_us: u64,
) -> PyResult<Bound<'py, PyTuple>> {
    let (values, done) = run(py, expressions, columns, rows, budget_us)?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    (PyBytes::new(py, &bytes), done).into_pyobject(py)
}

/// As [`evaluate`], for conditions: one byte per value, 1 true, 0 false, 2 unknown (an
/// absent field, an error, or a result that is not a boolean).
#[pyfunction]
fn evaluate_conditions<'py>(
    py: Python<'py>,
    expressions: &Bound<'py, PyList>,
    columns: &Bound<'py, PyList>,
    rows: usize,
    budget_us: u64,
) -> PyResult<Bound<'py, PyTuple>> {
    let (values, done) = run(py, expressions, columns, rows, budget_us)?;
    let bytes: Vec<u8> = values
        .iter()
        .map(|v| match *v {
            1.0 => 1,
            0.0 => 0,
            _ => 2,
        })
        .collect();
    (PyBytes::new(py, &bytes), done).into_pyobject(py)
}

fn run<'py>(
    py: Python<'py>,
    expressions: &Bound<'py, PyList>,
    columns: &Bound<'py, PyList>,
    rows: usize,
    budget_us: u64,
) -> PyResult<(Vec<f64>, usize)> {
    let exprs: Vec<Bound<'py, Expression>> = expressions
        .iter()
        .map(|e| e.cast_into::<Expression>().map_err(PyErr::from))
        .collect::<PyResult<_>>()?;
    let mut owned: Vec<(String, bool, Vec<f64>)> = Vec::with_capacity(columns.len());
    for item in columns.iter() {
        let (name, is_bool, values): (String, bool, PyBackedBytes) = item.extract()?;
        if values.len() != rows * 8 {
            return Err(PyErr::from(NativeError::InvalidInput(format!(
                "column {name} holds {} bytes; {rows} rows take {}",
                values.len(),
                rows * 8
            ))));
        }
        owned.push((name, is_bool, f64s(&values)));
    }
    let checked: Vec<&CheckedExpr> = exprs.iter().map(|e| &e.get().inner).collect();
    Ok(py.detach(|| {
        let cols: Vec<Column<'_>> = owned
            .iter()
            .map(|(name, is_bool, values)| Column {
                name,
                kind: if *is_bool {
                    ColumnKind::Bool
                } else {
                    ColumnKind::Double
                },
                values,
            })
            .collect();
        let done = cel_expr::evaluate(&checked, &cols, rows, Duration::from_micros(budget_us));
        (done.values, done.rows_done)
    }))
}

/// Adds this module's functions, class and exception to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(expression_error_codes, m)?)?;
    m.add_function(wrap_pyfunction!(expression_functions, m)?)?;
    m.add_function(wrap_pyfunction!(check_expression, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate_conditions, m)?)?;
    m.add_class::<Expression>()?;
    m.add("ExpressionError", m.py().get_type::<ExpressionError>())?;
    Ok(())
}
