//! Calculated metrics: formulas evaluated on each accepted reading while its batch is
//! decoded, their values encoded as PostgreSQL binary COPY tuples for `device_data_points`.
//!
//! A formula is a checked CEL expression ([`crate::cel_expr`], the engine and guardrails of
//! alarm expressions) over a reading's known numeric and boolean fields, with the tenant it
//! belongs to, the devices it applies to ([`Scope`]), the metric its points carry, a unit and
//! the formula's id and version (recorded on every point). A point is the formula's value on
//! one reading, at the reading's time.
//!
//! A value that cannot be a point is skipped and counted by [`SkipCode`], never an error: a
//! field the formula reads is absent (or text) in the reading, the result is not finite
//! (division by zero gives ±inf or NaN on doubles), the result is a boolean, any other
//! evaluation error, or the batch's time budget ran out. The points of a message that is
//! rejected as a whole are dropped with its readings ([`PointWriter::mark`] / `rollback`).
//!
//! Pure: no I/O, no Python. `formulas_py.rs` is its Python face; `decode.rs` calls it.

use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::cel_expr::CheckedExpr;
use crate::cel_fast::Val;
use crate::copy::{put_field, put_null, Value, HEADER, TRAILER};
use crate::fields::{field_index, Kind, FIELDS, FIELD_COUNT};
use crate::ts::PG_EPOCH_OFFSET_US;

/// `device_data_points` columns in COPY order, as (name, PostgreSQL type).
pub const POINT_COLUMNS: [(&str, &str); 8] = [
    ("time", "timestamp with time zone"),
    ("device_id", "uuid"),
    ("client_id", "uuid"),
    ("metric", "text"),
    ("value", "double precision"),
    ("unit", "text"),
    ("formula_id", "uuid"),
    ("formula_version", "bigint"),
];

/// Which devices of its tenant a formula applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One device.
    Device([u8; 16]),
    /// Every device of this type.
    DeviceType(String),
    /// Every device of the tenant.
    Tenant,
}

/// One enabled formula, compiled.
#[derive(Clone, Debug)]
pub struct Formula {
    pub id: [u8; 16],
    pub version: i64,
    pub client_id: [u8; 16],
    pub scope: Scope,
    pub metric: String,
    pub unit: Option<String>,
    pub expr: CheckedExpr,
}

/// Why a formula's value on a reading became no point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipCode {
    /// A field the formula reads is absent, null or text in the reading.
    MissingField,
    /// The result is ±inf or NaN (division by zero, `sqrt` of a negative, overflow).
    NonFinite,
    /// The result is a boolean, not a number.
    NotANumber,
    /// Any other evaluation error (arithmetic on a boolean, ordering a NaN, ...).
    Error,
    /// The batch's formula time budget ran out before this evaluation.
    OverBudget,
}

impl SkipCode {
    /// Every code, in declaration order.
    pub const ALL: [SkipCode; 5] = [
        SkipCode::MissingField,
        SkipCode::NonFinite,
        SkipCode::NotANumber,
        SkipCode::Error,
        SkipCode::OverBudget,
    ];

    /// The label Python (and the skipped-points metric) sees; stable.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipCode::MissingField => "missing_field",
            SkipCode::NonFinite => "non_finite",
            SkipCode::NotANumber => "not_a_number",
            SkipCode::Error => "error",
            SkipCode::OverBudget => "over_budget",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The enabled formulas of a batch's tenants, with each field they read resolved to its
/// column once.
#[derive(Clone, Debug)]
pub struct FormulaSet {
    formulas: Vec<Formula>,
    /// Per formula, per field of its expression: the index in [`FIELDS`] of a numeric or
    /// boolean column; None for a name that is no such column (always absent).
    slots: Vec<Vec<Option<usize>>>,
    /// Per client: the indices of its formulas.
    by_client: FxHashMap<[u8; 16], Vec<u32>>,
    budget: Duration,
}

impl FormulaSet {
    /// The set; `budget` bounds the time one batch spends evaluating.
    pub fn new(formulas: Vec<Formula>, budget: Duration) -> Self {
        let slots = formulas
            .iter()
            .map(|f| {
                f.expr
                    .fields
                    .iter()
                    .map(|name| field_index(name).filter(|&i| FIELDS[i].kind != Kind::Text))
                    .collect()
            })
            .collect();
        let mut by_client: FxHashMap<[u8; 16], Vec<u32>> = FxHashMap::default();
        for (i, f) in formulas.iter().enumerate() {
            by_client.entry(f.client_id).or_default().push(i as u32);
        }
        FormulaSet {
            formulas,
            slots,
            by_client,
            budget,
        }
    }

    /// The formulas, in the order given.
    pub fn formulas(&self) -> &[Formula] {
        &self.formulas
    }

    /// Whether the set holds no formula.
    pub fn is_empty(&self) -> bool {
        self.formulas.is_empty()
    }

    /// The formulas that apply to a device (indices into [`Self::formulas`]).
    fn applicable(
        &self,
        client: &[u8; 16],
        device: &[u8; 16],
        device_type: Option<&str>,
    ) -> Vec<u32> {
        self.by_client.get(client).map_or_else(Vec::new, |list| {
            list.iter()
                .copied()
                .filter(|&i| match &self.formulas[i as usize].scope {
                    Scope::Tenant => true,
                    Scope::Device(id) => id == device,
                    Scope::DeviceType(t) => Some(t.as_str()) == device_type,
                })
                .collect()
        })
    }

    /// One formula on one reading's values: exactly what ingest makes a point of, or why not
    /// (the dry run uses it on stored readings).
    pub fn value(&self, formula: usize, values: &[Value; FIELD_COUNT]) -> Result<f64, SkipCode> {
        let slots = &self.slots[formula];
        let field = |i: usize| match values[slots[i]?] {
            Value::Float(x) => Some(Val::Num(x)),
            Value::Int(n) => Some(Val::Num(n as f64)),
            Value::Bool(b) => Some(Val::Bool(b)),
            Value::Null | Value::Text(..) => None,
        };
        match self.formulas[formula].expr.evaluate_one(&field) {
            Val::Num(x) if x.is_finite() => Ok(x),
            Val::Num(_) => Err(SkipCode::NonFinite),
            Val::Bool(_) => Err(SkipCode::NotANumber),
            Val::Error if (0..slots.len()).any(|i| field(i).is_none()) => {
                Err(SkipCode::MissingField)
            }
            Val::Error => Err(SkipCode::Error),
        }
    }
}

/// Where a message's points start, to drop them if the message is rejected as a whole.
#[derive(Clone, Copy, Debug)]
pub struct PointMark {
    bytes: usize,
    points: usize,
}

/// What a batch's formulas produced.
#[derive(Debug, Default)]
pub struct Points {
    /// Header, one tuple per point, trailer (empty when the batch had no formulas).
    pub copy_data: Vec<u8>,
    pub points: usize,
    /// (formula index, code, count) of the skipped values, in formula then code order.
    pub skipped: Vec<(usize, SkipCode, u64)>,
}

/// Evaluates a [`FormulaSet`] on readings as they are accepted and appends their points.
pub struct PointWriter<'f> {
    set: &'f FormulaSet,
    buf: Vec<u8>,
    points: usize,
    /// Per formula, per [`SkipCode`]: values skipped in committed messages.
    skipped: Vec<[u64; SkipCode::ALL.len()]>,
    /// Skips of the message being decoded, counted when it commits.
    pending: Vec<(u32, SkipCode)>,
    /// Per device: the formulas that apply to it, found at its first reading.
    applicable: FxHashMap<[u8; 16], Vec<u32>>,
    started: Instant,
    readings: usize,
    over_budget: bool,
}

impl<'f> PointWriter<'f> {
    /// A writer whose buffer already holds the COPY header; the budget starts now.
    pub fn new(set: &'f FormulaSet) -> Self {
        PointWriter {
            set,
            buf: HEADER.to_vec(),
            points: 0,
            skipped: vec![[0; SkipCode::ALL.len()]; set.formulas.len()],
            pending: Vec::new(),
            applicable: FxHashMap::default(),
            started: Instant::now(),
            readings: 0,
            over_budget: false,
        }
    }

    /// The current end, for [`Self::rollback`].
    pub fn mark(&self) -> PointMark {
        PointMark {
            bytes: self.buf.len(),
            points: self.points,
        }
    }

    /// Drops the points and skips written since `mark` (a message rejected as a whole).
    pub fn rollback(&mut self, mark: PointMark) {
        self.buf.truncate(mark.bytes);
        self.points = mark.points;
        self.pending.clear();
    }

    /// Counts the skips of the message just accepted.
    pub fn commit(&mut self) {
        for (formula, code) in self.pending.drain(..) {
            self.skipped[formula as usize][code.index()] += 1;
        }
    }

    /// Evaluates every formula applying to the device on one accepted reading.
    pub fn reading(
        &mut self,
        client: &[u8; 16],
        device: &[u8; 16],
        device_type: Option<&str>,
        time_us: i64,
        values: &[Value; FIELD_COUNT],
    ) {
        let set = self.set;
        let applicable = self
            .applicable
            .entry(*device)
            .or_insert_with(|| set.applicable(client, device, device_type));
        if applicable.is_empty() {
            return;
        }
        // The clock is read once per 64 readings, as in alarm evaluation.
        if !self.over_budget && self.readings % 64 == 63 && self.started.elapsed() > set.budget {
            self.over_budget = true;
        }
        self.readings += 1;
        for &f in applicable.iter() {
            if self.over_budget {
                self.pending.push((f, SkipCode::OverBudget));
                continue;
            }
            match set.value(f as usize, values) {
                Ok(value) => {
                    write_point(
                        &mut self.buf,
                        &set.formulas[f as usize],
                        device,
                        time_us,
                        value,
                    );
                    self.points += 1;
                }
                Err(code) => self.pending.push((f, code)),
            }
        }
    }

    /// The finished points: the COPY buffer (empty without points) and the skip counts.
    pub fn finish(mut self) -> Points {
        let copy_data = if self.points == 0 {
            Vec::new()
        } else {
            self.buf.extend_from_slice(&TRAILER);
            self.buf
        };
        let skipped = self
            .skipped
            .iter()
            .enumerate()
            .flat_map(|(f, counts)| {
                SkipCode::ALL
                    .iter()
                    .filter(|c| counts[c.index()] > 0)
                    .map(move |&c| (f, c, counts[c.index()]))
            })
            .collect();
        Points {
            copy_data,
            points: self.points,
            skipped,
        }
    }
}

fn write_point(buf: &mut Vec<u8>, formula: &Formula, device: &[u8; 16], time_us: i64, value: f64) {
    buf.extend_from_slice(&(POINT_COLUMNS.len() as i16).to_be_bytes());
    put_field(buf, &(time_us - PG_EPOCH_OFFSET_US).to_be_bytes());
    put_field(buf, device);
    put_field(buf, &formula.client_id);
    put_field(buf, formula.metric.as_bytes());
    put_field(buf, &value.to_be_bytes());
    match &formula.unit {
        Some(unit) => put_field(buf, unit.as_bytes()),
        None => put_null(buf),
    }
    put_field(buf, &formula.id);
    put_field(buf, &formula.version.to_be_bytes());
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // exact values are the point
mod tests {
    use super::*;
    use crate::cel_expr::check;

    const CLIENT: [u8; 16] = [1; 16];
    const OTHER_CLIENT: [u8; 16] = [2; 16];
    const DEVICE: [u8; 16] = [3; 16];
    const OTHER_DEVICE: [u8; 16] = [4; 16];

    fn formula(id: u8, source: &str, scope: Scope) -> Formula {
        Formula {
            id: [id; 16],
            version: i64::from(id) + 10,
            client_id: CLIENT,
            scope,
            metric: format!("m{id}"),
            unit: Some("kW".into()),
            expr: check(source).expect("valid"),
        }
    }

    fn reading(pairs: &[(&str, Value)]) -> [Value; FIELD_COUNT] {
        let mut values = [Value::Null; FIELD_COUNT];
        for (name, v) in pairs {
            values[field_index(name).unwrap()] = *v;
        }
        values
    }

    /// Decodes the tuples of a points COPY buffer: (time_us, device, metric, value, unit,
    /// formula id, version).
    type Decoded = (i64, [u8; 16], String, f64, Option<String>, [u8; 16], i64);

    fn decode(copy: &[u8]) -> Vec<Decoded> {
        assert_eq!(&copy[..HEADER.len()], HEADER);
        let mut at = HEADER.len();
        let mut out = Vec::new();
        let take = |at: &mut usize| -> Option<Vec<u8>> {
            let len = i32::from_be_bytes(copy[*at..*at + 4].try_into().unwrap());
            *at += 4;
            if len < 0 {
                return None;
            }
            let v = copy[*at..*at + len as usize].to_vec();
            *at += len as usize;
            Some(v)
        };
        loop {
            let n = i16::from_be_bytes(copy[at..at + 2].try_into().unwrap());
            at += 2;
            if n == -1 {
                break;
            }
            assert_eq!(n, 8);
            let time = i64::from_be_bytes(take(&mut at).unwrap().try_into().unwrap());
            let device: [u8; 16] = take(&mut at).unwrap().try_into().unwrap();
            let client: [u8; 16] = take(&mut at).unwrap().try_into().unwrap();
            assert_eq!(client, CLIENT);
            let metric = String::from_utf8(take(&mut at).unwrap()).unwrap();
            let value = f64::from_be_bytes(take(&mut at).unwrap().try_into().unwrap());
            let unit = take(&mut at).map(|u| String::from_utf8(u).unwrap());
            let id: [u8; 16] = take(&mut at).unwrap().try_into().unwrap();
            let version = i64::from_be_bytes(take(&mut at).unwrap().try_into().unwrap());
            out.push((
                time + PG_EPOCH_OFFSET_US,
                device,
                metric,
                value,
                unit,
                id,
                version,
            ));
        }
        assert_eq!(at, copy.len());
        out
    }

    fn run(
        set: &FormulaSet,
        readings: &[([u8; 16], Option<&str>, [Value; FIELD_COUNT])],
    ) -> Points {
        let mut w = PointWriter::new(set);
        for (i, (device, device_type, values)) in readings.iter().enumerate() {
            w.reading(&CLIENT, device, *device_type, 1_000 + i as i64, values);
            w.commit();
        }
        w.finish()
    }

    #[test]
    fn a_point_per_formula_and_reading_with_its_version() {
        let set = FormulaSet::new(
            vec![
                formula(1, "voltage_l1 * current_l1 / 1000", Scope::Tenant),
                formula(2, "temperature_c * 9 / 5 + 32", Scope::Tenant),
            ],
            Duration::from_secs(1),
        );
        let r = reading(&[
            ("voltage_l1", Value::Float(230.0)),
            ("current_l1", Value::Float(10.0)),
            ("temperature_c", Value::Float(100.0)),
        ]);
        let points = run(&set, &[(DEVICE, None, r)]);
        assert_eq!(points.points, 2);
        assert!(points.skipped.is_empty());
        let rows = decode(&points.copy_data);
        assert_eq!(
            rows,
            vec![
                (
                    1_000,
                    DEVICE,
                    "m1".into(),
                    2.3,
                    Some("kW".into()),
                    [1; 16],
                    11
                ),
                (
                    1_000,
                    DEVICE,
                    "m2".into(),
                    212.0,
                    Some("kW".into()),
                    [2; 16],
                    12
                ),
            ]
        );
    }

    #[test]
    fn integer_and_boolean_fields_bind_as_numbers_and_booleans() {
        let set = FormulaSet::new(
            vec![formula(1, "relay_on ? uptime_s / 60 : 0", Scope::Tenant)],
            Duration::from_secs(1),
        );
        let r = reading(&[
            ("relay_on", Value::Bool(true)),
            ("uptime_s", Value::Int(120)),
        ]);
        let rows = decode(&run(&set, &[(DEVICE, None, r)]).copy_data);
        assert_eq!(rows[0].3, 2.0);
    }

    #[test]
    fn division_by_zero_is_skipped_and_counted() {
        let set = FormulaSet::new(
            vec![formula(
                1,
                "active_power_w / apparent_power_va",
                Scope::Tenant,
            )],
            Duration::from_secs(1),
        );
        let zero = reading(&[
            ("active_power_w", Value::Float(5.0)),
            ("apparent_power_va", Value::Float(0.0)),
        ]);
        let both_zero = reading(&[
            ("active_power_w", Value::Float(0.0)),
            ("apparent_power_va", Value::Float(0.0)),
        ]);
        let fine = reading(&[
            ("active_power_w", Value::Float(5.0)),
            ("apparent_power_va", Value::Float(10.0)),
        ]);
        let points = run(
            &set,
            &[
                (DEVICE, None, zero),
                (DEVICE, None, both_zero),
                (DEVICE, None, fine),
            ],
        );
        assert_eq!(points.points, 1);
        assert_eq!(points.skipped, vec![(0, SkipCode::NonFinite, 2)]);
        assert_eq!(decode(&points.copy_data)[0].3, 0.5);
    }

    #[test]
    fn a_missing_or_text_field_is_skipped_and_counted() {
        let set = FormulaSet::new(
            vec![
                formula(1, "voltage_l1 + voltage_l2", Scope::Tenant),
                formula(2, "status + 1", Scope::Tenant),
                formula(3, "no_such_field * 2", Scope::Tenant),
            ],
            Duration::from_secs(1),
        );
        let r = reading(&[
            ("voltage_l1", Value::Float(1.0)),
            ("status", Value::Text(0, 2)),
        ]);
        let points = run(&set, &[(DEVICE, None, r)]);
        assert_eq!(points.points, 0);
        assert!(points.copy_data.is_empty());
        assert_eq!(
            points.skipped,
            vec![
                (0, SkipCode::MissingField, 1),
                (1, SkipCode::MissingField, 1),
                (2, SkipCode::MissingField, 1),
            ]
        );
    }

    #[test]
    fn a_boolean_result_or_an_error_is_no_point() {
        let set = FormulaSet::new(
            vec![
                formula(1, "temperature_c > 30", Scope::Tenant),
                formula(2, "relay_on + 1", Scope::Tenant),
            ],
            Duration::from_secs(1),
        );
        let r = reading(&[
            ("temperature_c", Value::Float(40.0)),
            ("relay_on", Value::Bool(true)),
        ]);
        let points = run(&set, &[(DEVICE, None, r)]);
        assert_eq!(points.points, 0);
        assert_eq!(
            points.skipped,
            vec![(0, SkipCode::NotANumber, 1), (1, SkipCode::Error, 1)]
        );
    }

    #[test]
    fn scopes_pick_the_device_its_type_or_the_tenant() {
        let mut other_tenant = formula(4, "temperature_c", Scope::Tenant);
        other_tenant.client_id = OTHER_CLIENT;
        let set = FormulaSet::new(
            vec![
                formula(1, "temperature_c", Scope::Device(DEVICE)),
                formula(2, "temperature_c", Scope::DeviceType("meter".into())),
                formula(3, "temperature_c", Scope::Tenant),
                other_tenant,
            ],
            Duration::from_secs(1),
        );
        let r = reading(&[("temperature_c", Value::Float(1.0))]);
        let rows = decode(
            &run(
                &set,
                &[
                    (DEVICE, Some("sensor"), r),
                    (OTHER_DEVICE, Some("meter"), r),
                ],
            )
            .copy_data,
        );
        let seen: Vec<(u8, String)> = rows.iter().map(|r| (r.1[0], r.2.clone())).collect();
        assert_eq!(
            seen,
            vec![
                (3, "m1".into()),
                (3, "m3".into()),
                (4, "m2".into()),
                (4, "m3".into())
            ]
        );
    }

    #[test]
    fn a_rolled_back_message_leaves_no_points_and_no_counts() {
        let set = FormulaSet::new(
            vec![formula(1, "temperature_c / humidity_pct", Scope::Tenant)],
            Duration::from_secs(1),
        );
        let good = reading(&[
            ("temperature_c", Value::Float(2.0)),
            ("humidity_pct", Value::Float(4.0)),
        ]);
        let zero = reading(&[
            ("temperature_c", Value::Float(2.0)),
            ("humidity_pct", Value::Float(0.0)),
        ]);
        let mut w = PointWriter::new(&set);
        w.reading(&CLIENT, &DEVICE, None, 1, &good);
        w.commit();
        let mark = w.mark();
        w.reading(&CLIENT, &DEVICE, None, 2, &good);
        w.reading(&CLIENT, &DEVICE, None, 3, &zero);
        w.rollback(mark);
        let points = w.finish();
        assert_eq!(points.points, 1);
        assert!(points.skipped.is_empty());
        assert_eq!(decode(&points.copy_data)[0].0, 1);
    }

    #[test]
    fn past_the_budget_evaluations_are_skipped_and_counted() {
        let set = FormulaSet::new(
            vec![formula(1, "temperature_c * 2", Scope::Tenant)],
            Duration::ZERO,
        );
        let r = reading(&[("temperature_c", Value::Float(1.0))]);
        let readings: Vec<_> = (0..200).map(|_| (DEVICE, None, r)).collect();
        let points = run(&set, &readings);
        // The clock is first read at the 64th reading.
        assert_eq!(points.points, 63);
        assert_eq!(points.skipped, vec![(0, SkipCode::OverBudget, 137)]);
    }

    #[test]
    fn skip_codes_are_stable() {
        let labels: Vec<&str> = SkipCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            labels,
            [
                "missing_field",
                "non_finite",
                "not_a_number",
                "error",
                "over_budget"
            ]
        );
    }
}
