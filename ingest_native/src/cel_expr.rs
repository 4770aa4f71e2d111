//! CEL expressions over a reading's fields: checked once, evaluated over whole batches.
//!
//! One engine for the platform (alarm conditions, and later calculation formulas): the API
//! validates an expression with [`check`] and ingest evaluates the same [`Expr`] with
//! [`evaluate`], so what was accepted is exactly what runs. The guardrails:
//!
//! - a length cap ([`MAX_EXPRESSION_CHARS`]) and a parser nesting limit;
//! - no macros at all, so no comprehensions (`all`, `exists`, `map`, `filter`, ...) and no
//!   `has()`: the only calls are the operators and [`FUNCTIONS`] (an allow-list);
//! - variables are plain identifiers naming a field (no `a.b`, no indexing), every number
//!   a double: integer literals are rewritten to doubles at check time, since CEL refuses
//!   `double + int`;
//! - no strings, bytes, lists, maps or `null` literals (nothing a reading's number needs);
//! - a time budget per batch ([`evaluate`] stops and says how many rows it did).
//!
//! Pure: no I/O, no Python. `cel_py.rs` is its Python face.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cel::common::ast::{operators, CallExpr, Expr, IdedExpr, LiteralValue, SourceInfo};
use cel::common::types::{self, CelBool, CelDouble};
use cel::common::value::CowVal;
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, Value};

/// Longest expression accepted, in characters.
pub const MAX_EXPRESSION_CHARS: usize = 1000;
/// Deepest nesting the parser accepts (CEL's own default is 96).
pub const MAX_NESTING: u16 = 32;
/// Longest variable (field) name.
pub const MAX_NAME_CHARS: usize = 64;

/// The functions an expression may call, each `(name, arity)`; all take and return doubles.
pub const FUNCTIONS: &[(&str, usize)] = &[
    ("abs", 1),
    ("ceil", 1),
    ("floor", 1),
    ("round", 1),
    ("sqrt", 1),
    ("min", 2),
    ("max", 2),
    ("pow", 2),
];

/// Operators an expression may use (CEL's internal names).
const OPERATORS: &[&str] = &[
    operators::ADD,
    operators::SUBSTRACT,
    operators::MULTIPLY,
    operators::DIVIDE,
    operators::NEGATE,
    operators::EQUALS,
    operators::NOT_EQUALS,
    operators::LESS,
    operators::LESS_EQUALS,
    operators::GREATER,
    operators::GREATER_EQUALS,
    operators::LOGICAL_AND,
    operators::LOGICAL_OR,
    operators::LOGICAL_NOT,
    operators::CONDITIONAL,
];

/// Calls that are CEL macros elsewhere; named apart so the message says why.
const MACROS: &[&str] = &[
    operators::ALL,
    operators::EXISTS,
    operators::EXISTS_ONE,
    operators::MAP,
    operators::FILTER,
    operators::HAS,
];

/// Why an expression was refused: a stable code ([`ExprErrorCode::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExprErrorCode {
    /// Empty or only whitespace.
    Empty,
    /// Longer than [`MAX_EXPRESSION_CHARS`].
    TooLong,
    /// Not CEL (the parser's message), or nested deeper than [`MAX_NESTING`].
    Syntax,
    /// A comprehension macro (`all`, `exists`, `exists_one`, `map`, `filter`) or `has`.
    Comprehension,
    /// A function not in [`FUNCTIONS`], a method call, or the wrong number of arguments.
    FunctionNotAllowed,
    /// `a.b`, `a[i]` or an optional selection: only plain field names.
    FieldAccess,
    /// A string, bytes, `null`, list, map or message literal.
    LiteralNotAllowed,
    /// A variable name longer than [`MAX_NAME_CHARS`].
    NameTooLong,
}

impl ExprErrorCode {
    /// Every code, in declaration order (the Python side keeps the same list).
    pub const ALL: [ExprErrorCode; 8] = [
        ExprErrorCode::Empty,
        ExprErrorCode::TooLong,
        ExprErrorCode::Syntax,
        ExprErrorCode::Comprehension,
        ExprErrorCode::FunctionNotAllowed,
        ExprErrorCode::FieldAccess,
        ExprErrorCode::LiteralNotAllowed,
        ExprErrorCode::NameTooLong,
    ];

    /// The label Python sees; never changes for a given variant.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExprErrorCode::Empty => "empty",
            ExprErrorCode::TooLong => "too_long",
            ExprErrorCode::Syntax => "syntax",
            ExprErrorCode::Comprehension => "comprehension",
            ExprErrorCode::FunctionNotAllowed => "function_not_allowed",
            ExprErrorCode::FieldAccess => "field_access",
            ExprErrorCode::LiteralNotAllowed => "literal_not_allowed",
            ExprErrorCode::NameTooLong => "name_too_long",
        }
    }
}

/// One problem of an expression: where (character offsets, end exclusive) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExprProblem {
    pub code: ExprErrorCode,
    pub start: usize,
    pub end: usize,
    pub message: String,
}

/// A checked expression, ready to evaluate; `fields` are the variables it reads, sorted.
#[derive(Debug, Clone)]
pub struct CheckedExpr {
    pub source: String,
    pub fields: Vec<String>,
    expr: IdedExpr,
    /// The same expression for the direct evaluator (`cel_fast.rs`).
    fast: Option<crate::cel_fast::Node>,
}

fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        // No macros and no optional syntax; the standard library gives the operators.
        let mut env = Env::default().with_optional_support(false).with_stdlib();
        add_unary(&mut env, "abs", |args| unary(args, f64::abs));
        add_unary(&mut env, "ceil", |args| unary(args, f64::ceil));
        add_unary(&mut env, "floor", |args| unary(args, f64::floor));
        add_unary(&mut env, "round", |args| unary(args, f64::round));
        add_unary(&mut env, "sqrt", |args| unary(args, f64::sqrt));
        add_binary(&mut env, "min", |args| binary(args, f64::min));
        add_binary(&mut env, "max", |args| binary(args, f64::max));
        add_binary(&mut env, "pow", |args| binary(args, f64::powf));
        Arc::new(env)
    })
}

type Function = cel::common::functions::Function;

fn add_unary(env: &mut Env, name: &str, op: Function) {
    env.add_overload(
        name,
        &format!("{name}_double"),
        vec![types::DOUBLE_TYPE],
        op,
    )
    .expect("our overloads are declared once");
}

fn add_binary(env: &mut Env, name: &str, op: Function) {
    env.add_overload(
        name,
        &format!("{name}_double_double"),
        vec![types::DOUBLE_TYPE, types::DOUBLE_TYPE],
        op,
    )
    .expect("our overloads are declared once");
}

fn double_of(value: &CowVal<'_, '_>) -> Result<f64, ExecutionError> {
    value
        .downcast_ref::<CelDouble>()
        .map(|d| *d.inner())
        .ok_or_else(|| ExecutionError::function_error("math", "expects a double"))
}

// The signature is cel's `Function`: arguments come by value.
#[allow(clippy::needless_pass_by_value)]
fn unary<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
    op: fn(f64) -> f64,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let x = double_of(&args[0])?;
    Ok(CowVal::owned(CelDouble::from(op(x))))
}

#[allow(clippy::needless_pass_by_value)]
fn binary<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
    op: fn(f64, f64) -> f64,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let x = double_of(&args[0])?;
    let y = double_of(&args[1])?;
    Ok(CowVal::owned(CelDouble::from(op(x, y))))
}

/// Character offset of a byte offset in `source`.
fn char_offset(source: &str, byte: usize) -> usize {
    source.char_indices().take_while(|(i, _)| *i < byte).count()
}

/// Checks `source`; the checked expression, or every problem found.
pub fn check(source: &str) -> Result<CheckedExpr, Vec<ExprProblem>> {
    let chars = source.chars().count();
    if source.trim().is_empty() {
        return Err(vec![ExprProblem {
            code: ExprErrorCode::Empty,
            start: 0,
            end: chars,
            message: "the expression is empty".into(),
        }]);
    }
    if chars > MAX_EXPRESSION_CHARS {
        return Err(vec![ExprProblem {
            code: ExprErrorCode::TooLong,
            start: MAX_EXPRESSION_CHARS,
            end: chars,
            message: format!(
                "the expression is {chars} characters long; at most {MAX_EXPRESSION_CHARS}"
            ),
        }]);
    }
    let (mut expr, info) = match parse(source) {
        Ok(parsed) => parsed,
        Err(errors) => return Err(syntax_problems(source, &errors)),
    };
    let mut walk = Walk {
        source,
        info: &info,
        problems: Vec::new(),
        fields: Vec::new(),
        depth: 0,
        too_deep: false,
    };
    walk.visit(&mut expr);
    if !walk.problems.is_empty() {
        walk.problems.sort_by_key(|p| (p.start, p.end));
        return Err(walk.problems);
    }
    let mut fields = walk.fields;
    fields.sort();
    fields.dedup();
    let fast = crate::cel_fast::compile(&expr, &fields);
    Ok(CheckedExpr {
        source: source.to_owned(),
        fields,
        expr,
        fast,
    })
}

/// Stack for the parser's thread: the ANTLR parser recurses per nesting level before its
/// depth limit applies, and 1,000 characters of `(` or `-` overflow a default thread stack.
const PARSER_STACK_BYTES: usize = 256 << 20;

type SyntaxErrors = Vec<((isize, isize), String)>;

fn parse(source: &str) -> Result<(IdedExpr, SourceInfo), SyntaxErrors> {
    let owned = source.to_owned();
    let run = move || {
        // An environment without macros: `has`, `all`, `exists`, ... stay plain calls, which
        // the walk refuses by name.
        Env::default()
            .with_optional_support(false)
            .parser()
            .max_recursion_depth(MAX_NESTING)
            .parse_with_source_info(&owned)
            .map_err(|e| {
                e.errors
                    .into_iter()
                    .map(|p| (p.pos, p.msg))
                    .collect::<Vec<_>>()
            })
    };
    let joined = std::thread::Builder::new()
        .name("cel-parse".into())
        .stack_size(PARSER_STACK_BYTES)
        .spawn(run)
        .map(std::thread::JoinHandle::join);
    match joined {
        Ok(Ok(Ok(parsed))) => Ok(parsed),
        Ok(Ok(Err(errors))) => Err(errors),
        // No thread could be made, or the parser panicked: a refusal, not a crash.
        _ => Err(vec![((1, 0), "the expression could not be parsed".into())]),
    }
}

fn syntax_problems(source: &str, errors: &[((isize, isize), String)]) -> Vec<ExprProblem> {
    // Positions are (line from 1, column from 0) in characters.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            source
                .chars()
                .enumerate()
                .filter(|(_, c)| *c == '\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    let chars = source.chars().count();
    let mut out: Vec<ExprProblem> = errors
        .iter()
        .map(|(pos, msg)| {
            let line = usize::try_from(pos.0.max(1)).unwrap_or(1) - 1;
            let column = usize::try_from(pos.1.max(0)).unwrap_or(0);
            let start = line_starts
                .get(line)
                .map_or(chars, |s| (s + column).min(chars));
            let message = if msg.contains("recursion") || msg.contains("depth") {
                format!("nested deeper than {MAX_NESTING} levels")
            } else {
                msg.clone()
            };
            ExprProblem {
                code: ExprErrorCode::Syntax,
                start,
                end: (start + 1).min(chars.max(start)),
                message,
            }
        })
        .collect();
    if out.is_empty() {
        out.push(ExprProblem {
            code: ExprErrorCode::Syntax,
            start: 0,
            end: chars,
            message: "not a CEL expression".into(),
        });
    }
    out
}

struct Walk<'a> {
    source: &'a str,
    info: &'a SourceInfo,
    problems: Vec<ExprProblem>,
    fields: Vec<String>,
    /// Nesting of the node being visited: evaluation recurses as deep, so it is capped too
    /// (the parser folds some chains, e.g. of unary minus, that it does not count).
    depth: u16,
    too_deep: bool,
}

impl Walk<'_> {
    fn problem(&mut self, id: u64, code: ExprErrorCode, message: String) {
        self.problem_named(id, "", code, message);
    }

    /// A problem at node `id`; a call's node sits at its `(`, so `name` (the function's)
    /// moves the start back onto the name.
    fn problem_named(&mut self, id: u64, name: &str, code: ExprErrorCode, message: String) {
        let (mut start, end) = self.info.offset_for(id).map_or((0, 0), |(s, e)| {
            (
                char_offset(self.source, s as usize),
                char_offset(self.source, e as usize + 1),
            )
        });
        let chars: Vec<char> = self.source.chars().collect();
        let n = name.chars().count();
        if n > 0 && start >= n && chars[start - n..start].iter().copied().eq(name.chars()) {
            start -= n;
        }
        self.problems.push(ExprProblem {
            code,
            start,
            end: end.max(start + 1),
            message,
        });
    }

    fn visit(&mut self, node: &mut IdedExpr) {
        if self.depth >= MAX_NESTING {
            if !self.too_deep {
                self.too_deep = true;
                let message = format!("nested deeper than {MAX_NESTING} levels");
                self.problem(node.id, ExprErrorCode::Syntax, message);
            }
            return;
        }
        self.depth += 1;
        self.visit_node(node);
        self.depth -= 1;
    }

    fn visit_node(&mut self, node: &mut IdedExpr) {
        let id = node.id;
        match &mut node.expr {
            Expr::Ident(name) => {
                if name.chars().count() > MAX_NAME_CHARS {
                    let message = format!("a field name is at most {MAX_NAME_CHARS} characters");
                    self.problem(id, ExprErrorCode::NameTooLong, message);
                } else {
                    self.fields.push(name.clone());
                }
            }
            Expr::Literal(literal) => match literal {
                // Every number is a double: CEL refuses `double + int`.
                LiteralValue::Int(i) => {
                    *literal = LiteralValue::Double(CelDouble::from(*i.inner() as f64));
                }
                LiteralValue::UInt(u) => {
                    *literal = LiteralValue::Double(CelDouble::from(*u.inner() as f64));
                }
                LiteralValue::Double(_) | LiteralValue::Boolean(_) => {}
                LiteralValue::String(_) | LiteralValue::Bytes(_) | LiteralValue::Null => {
                    let message = "only numbers and true/false may be written as literals".into();
                    self.problem(id, ExprErrorCode::LiteralNotAllowed, message);
                }
            },
            Expr::Call(call) => self.visit_call(id, call),
            Expr::Select(_) => {
                let message = "only plain field names: no `a.b` selection".into();
                self.problem(id, ExprErrorCode::FieldAccess, message);
            }
            Expr::Comprehension(_) => {
                let message = "comprehensions are not allowed".into();
                self.problem(id, ExprErrorCode::Comprehension, message);
            }
            Expr::List(_) | Expr::Map(_) | Expr::Struct(_) => {
                let message = "list, map and message literals are not allowed".into();
                self.problem(id, ExprErrorCode::LiteralNotAllowed, message);
            }
            Expr::Unspecified => {
                self.problem(id, ExprErrorCode::Syntax, "incomplete expression".into());
            }
        }
    }

    fn visit_call(&mut self, id: u64, call: &mut CallExpr) {
        let name = call.func_name.clone();
        let name = name.as_str();
        if name == operators::INDEX || name == operators::OPT_INDEX || name == operators::OPT_SELECT
        {
            let message = "only plain field names: no indexing".into();
            self.problem(id, ExprErrorCode::FieldAccess, message);
            return;
        }
        if MACROS.contains(&name) {
            let message = format!("`{name}` (a macro or comprehension) is not allowed");
            self.problem_named(id, name, ExprErrorCode::Comprehension, message);
            return;
        }
        if call.target.is_some() {
            let message = format!("method calls are not allowed (`.{name}()`)");
            self.problem_named(id, name, ExprErrorCode::FunctionNotAllowed, message);
            return;
        }
        if !OPERATORS.contains(&name) {
            match FUNCTIONS.iter().find(|(f, _)| *f == name) {
                None => {
                    let allowed: Vec<&str> = FUNCTIONS.iter().map(|(f, _)| *f).collect();
                    let message = if name == operators::MODULO {
                        "`%` is not defined on doubles".into()
                    } else if name == operators::IN {
                        "`in` is not allowed".into()
                    } else {
                        format!(
                            "function `{name}` is not allowed; allowed: {}",
                            allowed.join(", ")
                        )
                    };
                    self.problem_named(id, name, ExprErrorCode::FunctionNotAllowed, message);
                    return;
                }
                Some((_, arity)) if *arity != call.args.len() => {
                    let message = format!(
                        "`{name}` takes {arity} argument(s), got {}",
                        call.args.len()
                    );
                    self.problem_named(id, name, ExprErrorCode::FunctionNotAllowed, message);
                    return;
                }
                Some(_) => {}
            }
        }
        for arg in &mut call.args {
            self.visit(arg);
        }
    }
}

impl CheckedExpr {
    /// Evaluates the expression on one reading: `field(i)` is the value of `self.fields[i]`
    /// (None: absent). [`Val::Error`](crate::cel_fast::Val::Error) when the value is unknown
    /// (an absent field, an error). The direct evaluator answers when it can, the `cel`
    /// interpreter otherwise, exactly as [`evaluate`] does.
    pub fn evaluate_one(
        &self,
        field: &dyn Fn(usize) -> Option<crate::cel_fast::Val>,
    ) -> crate::cel_fast::Val {
        use crate::cel_fast::{eval, Outcome, Val};
        if let Some(node) = &self.fast {
            if let Outcome::Value(v) = eval(node, field) {
                return v;
            }
        }
        let resolver = OneReading {
            fields: &self.fields,
            values: (0..self.fields.len()).map(field).collect(),
        };
        let mut context = Context::with_env(Arc::clone(env()));
        context.set_variable_resolver(&resolver);
        match Value::resolve(&self.expr, &context) {
            Ok(Value::Bool(b)) => Val::Bool(b),
            Ok(Value::Float(f)) => Val::Num(f),
            _ => Val::Error,
        }
    }
}

/// One reading's fields, for the interpreter, by the expression's field indices.
struct OneReading<'a> {
    fields: &'a [String],
    values: Vec<Option<crate::cel_fast::Val>>,
}

impl VariableResolver for OneReading<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        use crate::cel_fast::Val;
        let index = self
            .fields
            .binary_search_by(|f| f.as_str().cmp(variable))
            .ok()?;
        match self.values[index]? {
            Val::Num(x) => Some(CowVal::owned(CelDouble::from(x))),
            Val::Bool(b) => Some(CowVal::owned(CelBool::from(b))),
            Val::Error => None,
        }
    }
}

/// How a column's values are bound: as doubles, or as booleans (non-zero is true).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Double,
    Bool,
}

/// One named column of a batch: `values[row]`, NaN where the reading has no value.
pub struct Column<'a> {
    pub name: &'a str,
    pub kind: ColumnKind,
    pub values: &'a [f64],
}

struct Row<'a, 'c> {
    columns: &'a [Column<'c>],
    row: usize,
}

impl VariableResolver for Row<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        let column = self.columns.iter().find(|c| c.name == variable)?;
        let value = *column.values.get(self.row)?;
        if value.is_nan() {
            return None; // absent: the expression's value is unknown for this reading
        }
        Some(match column.kind {
            ColumnKind::Double => CowVal::owned(CelDouble::from(value)),
            ColumnKind::Bool => CowVal::owned(CelBool::from(value != 0.0)),
        })
    }
}

/// What [`evaluate`] did: `values[e * rows + r]` is expression `e` on row `r` (true 1.0,
/// false 0.0, a number as is; NaN when unknown: a field absent, an error, a non-number);
/// `rows_done` rows were evaluated before the budget ran out (all of them when it did not).
pub struct Evaluated {
    pub values: Vec<f64>,
    pub rows_done: usize,
}

/// Evaluates every expression on every row, rows in order, within `budget`.
pub fn evaluate(
    exprs: &[&CheckedExpr],
    columns: &[Column<'_>],
    rows: usize,
    budget: Duration,
) -> Evaluated {
    evaluate_with(exprs, columns, rows, budget, true)
}

/// As [`evaluate`]; `fast` false evaluates everything with the `cel` interpreter (tests).
pub fn evaluate_with(
    exprs: &[&CheckedExpr],
    columns: &[Column<'_>],
    rows: usize,
    budget: Duration,
    fast: bool,
) -> Evaluated {
    use crate::cel_fast::{eval, Outcome, Val};
    let started = Instant::now();
    let mut values = vec![f64::NAN; exprs.len() * rows];
    let env = env();
    // Each expression's fields as column indices, found once per batch.
    let slots: Vec<Vec<Option<usize>>> = exprs
        .iter()
        .map(|e| {
            e.fields
                .iter()
                .map(|f| columns.iter().position(|c| c.name == f))
                .collect()
        })
        .collect();
    let mut rows_done = rows;
    for row in 0..rows {
        // The clock is read once per 64 rows: a read costs about as much as an evaluation.
        if row % 64 == 0 && row > 0 && started.elapsed() > budget {
            rows_done = row;
            break;
        }
        let resolver = Row { columns, row };
        let mut context: Option<Context<'_, '_>> = None;
        for (e, expr) in exprs.iter().enumerate() {
            if fast {
                if let Some(node) = &expr.fast {
                    let field = |i: usize| {
                        let column = &columns[slots[e][i]?];
                        let v = *column.values.get(row)?;
                        if v.is_nan() {
                            return None;
                        }
                        Some(match column.kind {
                            ColumnKind::Double => Val::Num(v),
                            ColumnKind::Bool => Val::Bool(v != 0.0),
                        })
                    };
                    match eval(node, &field) {
                        Outcome::Value(Val::Bool(b)) => {
                            values[e * rows + row] = f64::from(u8::from(b));
                            continue;
                        }
                        Outcome::Value(Val::Num(x)) => {
                            values[e * rows + row] = x;
                            continue;
                        }
                        Outcome::Value(Val::Error) => continue,
                        Outcome::Defer => {}
                    }
                }
            }
            let context = context.get_or_insert_with(|| {
                let mut c = Context::with_env(Arc::clone(env));
                c.set_variable_resolver(&resolver);
                c
            });
            values[e * rows + row] = match Value::resolve(&expr.expr, context) {
                Ok(Value::Bool(b)) => f64::from(u8::from(b)),
                Ok(Value::Float(f)) => f,
                _ => f64::NAN,
            };
        }
    }
    Evaluated { values, rows_done }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // exact results are the point
mod tests {
    use super::*;

    fn codes(source: &str) -> Vec<&'static str> {
        check(source)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|p| p.code.as_str())
            .collect()
    }

    fn eval_one(source: &str, names: &[(&str, f64)]) -> f64 {
        let expr = check(source).expect("valid");
        let storage: Vec<[f64; 1]> = names.iter().map(|(_, v)| [*v]).collect();
        let columns: Vec<Column<'_>> = names
            .iter()
            .zip(&storage)
            .map(|((n, _), v)| Column {
                name: n,
                kind: ColumnKind::Double,
                values: v,
            })
            .collect();
        evaluate(&[&expr], &columns, 1, Duration::from_secs(1)).values[0]
    }

    #[test]
    fn fields_are_the_identifiers_read_sorted_once() {
        let e = check("temperature_c > 30 && humidity_pct < temperature_c * 2").unwrap();
        assert_eq!(e.fields, vec!["humidity_pct", "temperature_c"]);
    }

    #[test]
    fn integer_literals_are_doubles() {
        assert_eq!(eval_one("t * 2 + 1 > 10", &[("t", 5.0)]), 1.0);
        assert_eq!(eval_one("t * 2 + 1", &[("t", 5.0)]), 11.0);
    }

    #[test]
    fn an_absent_field_is_unknown() {
        assert!(eval_one("t > 1", &[("t", f64::NAN)]).is_nan());
        assert!(eval_one("u > 1", &[("t", 3.0)]).is_nan());
    }

    #[test]
    fn allowed_functions_work() {
        assert_eq!(eval_one("abs(t)", &[("t", -2.5)]), 2.5);
        assert_eq!(eval_one("max(t, 3) + min(t, 3)", &[("t", 1.0)]), 4.0);
        assert_eq!(
            eval_one("round(t) + floor(t) + ceil(t)", &[("t", 1.4)]),
            4.0
        );
        assert_eq!(eval_one("sqrt(pow(t, 2))", &[("t", 3.0)]), 3.0);
    }

    #[test]
    fn guardrails_refuse_with_codes() {
        assert_eq!(codes(""), ["empty"]);
        assert_eq!(codes(&"a+".repeat(600)), ["too_long"]);
        assert_eq!(codes("a >"), ["syntax"]);
        assert_eq!(codes("[1, 2].exists(x, x > 1)"), ["comprehension"]);
        assert_eq!(codes("has(a)"), ["comprehension"]);
        assert_eq!(codes("size(a) > 1"), ["function_not_allowed"]);
        assert_eq!(codes("a.b > 1"), ["field_access"]);
        assert_eq!(codes("a['x'] > 1"), ["field_access"]);
        assert_eq!(codes("a == 'x'"), ["literal_not_allowed"]);
        assert_eq!(codes("a % 2 == 0"), ["function_not_allowed"]);
        assert_eq!(codes("abs(a, b)"), ["function_not_allowed"]);
    }

    #[test]
    fn problems_name_their_position() {
        let problems = check("t > 1 && size(x) > 2").unwrap_err();
        assert_eq!(problems[0].code, ExprErrorCode::FunctionNotAllowed);
        assert_eq!(problems[0].start, 9);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}t{}", "(".repeat(60), ")".repeat(60));
        // The worst a capped expression can nest, without overflowing anything.
        assert_eq!(codes(&format!("{}t", "(".repeat(999)))[0], "syntax");
        assert_eq!(codes(&deep)[0], "syntax");
        // The parser folds chains of unary operators: these are one level deep.
        let minus = format!("{}t", "-".repeat(999));
        assert_eq!(eval_one(&minus, &[("t", 2.0)]), -2.0);
        assert!(check(&format!("{}t", "!".repeat(999))).is_ok());
        let sums = format!("t{}", " + t".repeat(240));
        assert_eq!(codes(&sums)[0], "syntax");
    }

    #[test]
    fn the_budget_stops_between_rows() {
        let expr = check("t > 1").unwrap();
        let values = vec![2.0; 10_000];
        let columns = [Column {
            name: "t",
            kind: ColumnKind::Double,
            values: &values,
        }];
        let out = evaluate(&[&expr], &columns, values.len(), Duration::ZERO);
        assert_eq!(out.rows_done, 64);
        let full = evaluate(&[&expr], &columns, values.len(), Duration::from_secs(5));
        assert_eq!(full.rows_done, values.len());
        assert!(full.values.iter().all(|v| *v == 1.0));
    }

    #[test]
    #[allow(clippy::many_single_char_names)] // t, u, b, c are the expressions' fields
    fn the_direct_evaluator_agrees_with_the_interpreter() {
        let sources = [
            "t > 30.5",
            "t >= 1 && u < 2",
            "t > 1 || u > 1",
            "!(t > 1) && b",
            "b || t > 100",
            "b == true",
            "b != c",
            "b < c",
            "t == b",
            "t / u > 1",
            "t / 0 > 1",
            "-t + abs(u) * 2 - max(t, u) / min(t, 1) + pow(t, 2) - sqrt(u)",
            "round(t) == floor(t) || ceil(u) != u",
            "t > 0 ? u : t",
            "b ? t > 1 : u > 1",
            "t + b > 1",
            "sqrt(t) > sqrt(u)",
            "(t > 1 && u > 1) || (b && !c)",
        ];
        let n = 400;
        let mut seed: u64 = 7;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as f64 / f64::from(1u32 << 31)
        };
        let gen = |next: &mut dyn FnMut() -> f64, bool_col: bool| -> Vec<f64> {
            (0..n)
                .map(|_| {
                    let r = next();
                    if r < 0.15 {
                        f64::NAN
                    } else if bool_col {
                        f64::from(u8::from(r < 0.6))
                    } else if r < 0.25 {
                        0.0
                    } else {
                        (next() - 0.5) * 8.0
                    }
                })
                .collect()
        };
        let t = gen(&mut next, false);
        let u = gen(&mut next, false);
        let b = gen(&mut next, true);
        let c = gen(&mut next, true);
        let columns = [
            Column {
                name: "t",
                kind: ColumnKind::Double,
                values: &t,
            },
            Column {
                name: "u",
                kind: ColumnKind::Double,
                values: &u,
            },
            Column {
                name: "b",
                kind: ColumnKind::Bool,
                values: &b,
            },
            Column {
                name: "c",
                kind: ColumnKind::Bool,
                values: &c,
            },
        ];
        for source in sources {
            let expr = check(source).unwrap_or_else(|e| panic!("{source}: {e:?}"));
            assert!(expr.fast.is_some(), "{source} has no direct form");
            let budget = Duration::from_secs(10);
            let fast = evaluate_with(&[&expr], &columns, n, budget, true).values;
            let slow = evaluate_with(&[&expr], &columns, n, budget, false).values;
            let known = slow.iter().filter(|v| !v.is_nan()).count();
            // `t + b` is an error on every row (no arithmetic on booleans), as it must be.
            assert!(
                known > n / 10 || source == "t + b > 1",
                "{source}: only {known} rows have a value"
            );
            for row in 0..n {
                let (f, s) = (fast[row], slow[row]);
                assert!(
                    f.to_bits() == s.to_bits() || (f.is_nan() && s.is_nan()),
                    "{source} at row {row} (t={}, u={}, b={}, c={}): direct {f}, cel {s}",
                    t[row],
                    u[row],
                    b[row],
                    c[row]
                );
            }
        }
    }
}
