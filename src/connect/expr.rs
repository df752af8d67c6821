//! Spark Connect expressions as DataFusion expressions: column references resolved against
//! the input (by name, case-insensitively, or by the DataFrame a column came from), Spark's
//! function names mapped to DataFusion's, literals, casts, sort orders and windows; each
//! with the column name Spark would give it.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::{
    binary_expr, cast, lit, Expr, ExprFunctionExt, ExprSchemable, Operator, SortExpr, WindowFrame,
    WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};

use super::error::{ConnectError, ConnectResult};
use super::proto::expression::{self as pe, ExprType};
use super::proto::Expression;
use super::types::{arrow_type, parse_type};

/// Output columns of the relations a plan id named, for columns a client qualifies by
/// the DataFrame they came from (`df1.id` in a join).
pub type PlanColumns = Vec<(i64, Vec<Column>)>;

/// An expression with the column name Spark gives it when it is not aliased.
#[derive(Debug, Clone)]
pub struct Named {
    /// The expression.
    pub expr: Expr,
    /// Spark's name for it (`(a + 1)`, `sum(x)`, `count(1)`).
    pub name: String,
}

impl Named {
    fn new(expr: Expr, name: impl Into<String>) -> Self {
        Self {
            expr,
            name: name.into(),
        }
    }

    /// The expression aliased to its name, unless it is a column already so named.
    pub fn aliased(self) -> Expr {
        match &self.expr {
            Expr::Column(c) if c.name == self.name => self.expr,
            Expr::Alias(a) if a.name == self.name => self.expr,
            _ => self.expr.alias(self.name),
        }
    }
}

/// What expressions are resolved against.
pub struct Resolver<'a> {
    /// The input's schema.
    pub schema: &'a DFSchema,
    /// The session's functions.
    pub state: &'a SessionState,
    /// Plan ids seen so far in this plan.
    pub plans: &'a PlanColumns,
}

/// Splits a Spark identifier (`a.b`, `` `a.b`.c ``) into its parts.
pub fn identifier_parts(text: &str) -> ConnectResult<Vec<String>> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '`' if quoted && chars.peek() == Some(&'`') => {
                chars.next();
                current.push('`');
            }
            '`' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if quoted {
        return Err(ConnectError::parse(format!(
            "unclosed backquote in the column name {text}"
        )));
    }
    parts.push(current);
    Ok(parts)
}

/// A Spark literal as a DataFusion value, with Spark's display of it.
pub fn literal(l: &pe::Literal) -> ConnectResult<(ScalarValue, String)> {
    use pe::literal::LiteralType as L;
    let Some(value) = &l.literal_type else {
        return Err(ConnectError::invalid("a literal without a value"));
    };
    Ok(match value {
        L::Null(t) => (ScalarValue::try_from(&arrow_type(t)?)?, "NULL".into()),
        L::Binary(b) => (
            ScalarValue::Binary(Some(b.to_vec())),
            format!("X'{}'", hex(b)),
        ),
        L::Boolean(b) => (ScalarValue::Boolean(Some(*b)), b.to_string()),
        L::Byte(v) => (ScalarValue::Int8(Some(*v as i8)), v.to_string()),
        L::Short(v) => (ScalarValue::Int16(Some(*v as i16)), v.to_string()),
        L::Integer(v) => (ScalarValue::Int32(Some(*v)), v.to_string()),
        L::Long(v) => (ScalarValue::Int64(Some(*v)), v.to_string()),
        L::Float(v) => (ScalarValue::Float32(Some(*v)), v.to_string()),
        L::Double(v) => (ScalarValue::Float64(Some(*v)), v.to_string()),
        L::Decimal(d) => {
            let (value, name) = decimal_literal(d)?;
            (value, name)
        }
        L::String(s) => (ScalarValue::Utf8(Some(s.clone())), s.clone()),
        L::Date(days) => {
            let v = ScalarValue::Date32(Some(*days));
            let name = format!("DATE '{v}'");
            (v, name)
        }
        L::Timestamp(us) => {
            let v = ScalarValue::TimestampMicrosecond(Some(*us), Some("UTC".into()));
            let name = format!("TIMESTAMP '{v}'");
            (v, name)
        }
        L::TimestampNtz(us) => {
            let v = ScalarValue::TimestampMicrosecond(Some(*us), None);
            let name = format!("TIMESTAMP_NTZ '{v}'");
            (v, name)
        }
        L::YearMonthInterval(months) => (
            ScalarValue::IntervalYearMonth(Some(*months)),
            format!("INTERVAL '{months}' MONTH"),
        ),
        L::DayTimeInterval(us) => {
            (
                ScalarValue::IntervalMonthDayNano(Some(
                    arrow::datatypes::IntervalMonthDayNano::new(0, 0, us.saturating_mul(1000)),
                )),
                format!("INTERVAL '{us}' MICROSECOND"),
            )
        }
        L::Array(a) => {
            let element = match &a.element_type {
                Some(t) => arrow_type(t)?,
                None => DataType::Null,
            };
            let mut values = Vec::with_capacity(a.elements.len());
            let mut names = Vec::with_capacity(a.elements.len());
            for e in &a.elements {
                let (v, n) = literal(e)?;
                values.push(v.cast_to(&element)?);
                names.push(n);
            }
            let list = ScalarValue::new_list_nullable(&values, &element);
            (
                ScalarValue::List(list),
                format!("array({})", names.join(", ")),
            )
        }
        L::CalendarInterval(_) => return Err(ConnectError::unimplemented("interval literal")),
        L::Map(_) => return Err(ConnectError::unimplemented("map literal")),
        L::Struct(_) => return Err(ConnectError::unimplemented("struct literal")),
        L::SpecializedArray(_) => {
            return Err(ConnectError::unimplemented("specialized array literal"))
        }
        L::Time(_) => return Err(ConnectError::unimplemented("TIME literal")),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn decimal_literal(d: &pe::literal::Decimal) -> ConnectResult<(ScalarValue, String)> {
    let text = d.value.trim();
    let (int_part, frac_part) = text.split_once('.').unwrap_or((text, ""));
    let scale = d.scale.unwrap_or(frac_part.len() as i32);
    let digits: String = format!("{int_part}{frac_part}")
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    let mut value: i128 = digits
        .parse()
        .map_err(|_| ConnectError::invalid(format!("decimal literal {text}")))?;
    let have = frac_part.len() as i32;
    if scale > have {
        value *= 10i128.pow((scale - have) as u32);
    }
    let precision = d.precision.unwrap_or_else(|| {
        (digits.trim_start_matches('-').len() as i32)
            .max(scale)
            .max(1)
    });
    let v = ScalarValue::Decimal128(
        Some(value),
        precision.clamp(1, 38) as u8,
        scale.clamp(0, 38) as i8,
    );
    Ok((v, text.to_string()))
}

/// Spark's functions whose DataFusion name differs.
fn datafusion_name(spark: &str) -> &str {
    match spark {
        "mean" => "avg",
        "std" => "stddev",
        "variance" => "var_samp",
        "collect_list" | "array_agg" => "array_agg",
        "first" => "first_value",
        "last" => "last_value",
        "approx_count_distinct" => "approx_distinct",
        "percentile_approx" | "approx_percentile" => "approx_percentile_cont",
        "every" => "bool_and",
        "some" | "any" => "bool_or",
        "ceiling" => "ceil",
        "sign" => "signum",
        "length" | "char_length" => "character_length",
        "startswith" => "starts_with",
        "endswith" => "ends_with",
        "rlike" | "regexp" => "regexp_like",
        "size" | "array_size" => "cardinality",
        "rand" => "random",
        "pow" => "power",
        "ucase" => "upper",
        "lcase" => "lower",
        "substring" => "substr",
        "nvl" | "ifnull" => "coalesce",
        "date_format" => "to_char",
        "current_timestamp" => "now",
        "dayofmonth" | "day" => "day",
        "sha2" => "sha2",
        other => other,
    }
}

/// Spark's one-argument operators: how each builds its expression, and the text around
/// its argument's name in Spark's column name.
type Unary = (fn(Expr) -> Expr, &'static str, &'static str);

fn unary_operator(name: &str) -> Option<Unary> {
    Some(match name {
        "not" | "!" => (|e| Expr::Not(Box::new(e)), "(NOT ", ")"),
        "isnull" => (Expr::is_null, "(", " IS NULL)"),
        "isnotnull" => (Expr::is_not_null, "(", " IS NOT NULL)"),
        "negative" => (|e| Expr::Negative(Box::new(e)), "(- ", ")"),
        "positive" => (|e| e, "(+ ", ")"),
        _ => return None,
    })
}

fn binary_operator(name: &str) -> Option<(Operator, &'static str)> {
    Some(match name {
        "+" => (Operator::Plus, "+"),
        "-" => (Operator::Minus, "-"),
        "*" => (Operator::Multiply, "*"),
        "/" => (Operator::Divide, "/"),
        "%" | "mod" => (Operator::Modulo, "%"),
        "==" | "=" => (Operator::Eq, "="),
        "!=" | "<>" => (Operator::NotEq, "!="),
        "<" => (Operator::Lt, "<"),
        "<=" => (Operator::LtEq, "<="),
        ">" => (Operator::Gt, ">"),
        ">=" => (Operator::GtEq, ">="),
        "<=>" => (Operator::IsNotDistinctFrom, "<=>"),
        "and" => (Operator::And, "AND"),
        "or" => (Operator::Or, "OR"),
        "&" => (Operator::BitwiseAnd, "&"),
        "|" => (Operator::BitwiseOr, "|"),
        "^" => (Operator::BitwiseXor, "^"),
        _ => return None,
    })
}

fn date_part(part: &str, e: Expr) -> Expr {
    datafusion::functions::datetime::expr_fn::date_part(lit(part), e)
}

/// A Spark date/time pattern (`yyyy-MM-dd HH:mm:ss`) as a chrono format (`%Y-%m-%d ...`).
fn chrono_format(spark: &str) -> String {
    const TOKENS: [(&str, &str); 16] = [
        ("yyyy", "%Y"),
        ("yy", "%y"),
        ("MMMM", "%B"),
        ("MMM", "%b"),
        ("MM", "%m"),
        ("dd", "%d"),
        ("HH", "%H"),
        ("hh", "%I"),
        ("mm", "%M"),
        ("ss", "%S"),
        ("SSSSSS", "%6f"),
        ("SSS", "%3f"),
        ("EEEE", "%A"),
        ("EEE", "%a"),
        ("a", "%p"),
        ("D", "%j"),
    ];
    let mut out = String::new();
    let mut rest = spark;
    'outer: while !rest.is_empty() {
        if let Some(stripped) = rest.strip_prefix('\'') {
            if let Some(end) = stripped.find('\'') {
                out.push_str(&stripped[..end]);
                rest = &stripped[end + 1..];
                continue;
            }
        }
        for (token, chrono) in TOKENS {
            if let Some(stripped) = rest.strip_prefix(token) {
                out.push_str(chrono);
                rest = stripped;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Field `name` of struct `e`: null where the struct is (a null struct's children hold
/// whatever its writer left there).
fn struct_field(e: Expr, name: &str) -> ConnectResult<Expr> {
    let field = datafusion::functions::core::expr_fn::get_field(e.clone(), name);
    Ok(datafusion::logical_expr::when(e.is_not_null(), field).end()?)
}

impl Resolver<'_> {
    /// Resolves `e` against the input.
    pub fn expr(&self, e: &Expression) -> ConnectResult<Named> {
        let Some(kind) = &e.expr_type else {
            return Err(ConnectError::invalid("an expression without a type"));
        };
        match kind {
            ExprType::Literal(l) => {
                let (v, name) = literal(l)?;
                Ok(Named::new(lit(v), name))
            }
            ExprType::UnresolvedAttribute(a) => self.column(&a.unparsed_identifier, a.plan_id),
            ExprType::UnresolvedFunction(f) => {
                self.function(&f.function_name, &f.arguments, f.is_distinct)
            }
            ExprType::CallFunction(f) => self.function(&f.function_name, &f.arguments, false),
            ExprType::ExpressionString(s) => {
                let expr = self.state.create_logical_expr(&s.expression, self.schema)?;
                let name = match &expr {
                    Expr::Alias(a) => a.name.clone(),
                    Expr::Column(c) => c.name.clone(),
                    _ => s.expression.clone(),
                };
                Ok(Named::new(expr, name))
            }
            ExprType::UnresolvedStar(_) => Err(ConnectError::analysis(
                "INVALID_USAGE_OF_STAR_OR_REGEX",
                "`*` is only allowed in a select list or as the argument of count",
            )),
            ExprType::Alias(a) => {
                let inner = a
                    .expr
                    .as_deref()
                    .ok_or_else(|| ConnectError::invalid("an alias without an expression"))?;
                let name = match a.name.as_slice() {
                    [one] => one.clone(),
                    _ => {
                        return Err(ConnectError::unimplemented(
                            "an alias with several names (multi-column generators)",
                        ))
                    }
                };
                let inner = self.expr(inner)?;
                Ok(Named::new(inner.expr.alias(&name), name))
            }
            ExprType::Cast(c) => {
                use pe::cast::CastToType;
                let inner = c
                    .expr
                    .as_deref()
                    .ok_or_else(|| ConnectError::invalid("a cast without an expression"))?;
                let inner = self.expr(inner)?;
                let target = match &c.cast_to_type {
                    Some(CastToType::Type(t)) => arrow_type(t)?,
                    Some(CastToType::TypeStr(s)) => parse_type(s)?,
                    None => return Err(ConnectError::invalid("a cast without a type")),
                };
                Ok(Named::new(cast(inner.expr, target), inner.name))
            }
            ExprType::SortOrder(_) => Err(ConnectError::invalid(
                "a sort order outside of a sort or a window",
            )),
            ExprType::Window(w) => self.window(w),
            ExprType::UnresolvedRegex(_) => Err(ConnectError::unimplemented("colRegex")),
            ExprType::LambdaFunction(_) | ExprType::UnresolvedNamedLambdaVariable(_) => Err(
                ConnectError::unimplemented("higher-order functions (lambda expressions)"),
            ),
            ExprType::UnresolvedExtractValue(x) => self.extract_value(x),
            ExprType::UpdateFields(_) => Err(ConnectError::unimplemented("withField/dropFields")),
            ExprType::CommonInlineUserDefinedFunction(_) => {
                Err(ConnectError::unimplemented("Python user-defined functions"))
            }
            ExprType::NamedArgumentExpression(_) => {
                Err(ConnectError::unimplemented("named function arguments"))
            }
            ExprType::MergeAction(_) => Err(ConnectError::unimplemented("MERGE INTO")),
            ExprType::TypedAggregateExpression(_) => {
                Err(ConnectError::unimplemented("typed aggregate expressions"))
            }
            ExprType::SubqueryExpression(_) => Err(ConnectError::unimplemented(
                "DataFrame subquery expressions",
            )),
            ExprType::DirectShufflePartitionId(_) => {
                Err(ConnectError::unimplemented("direct shuffle partition ids"))
            }
            ExprType::Extension(_) => Err(ConnectError::unimplemented("expression extensions")),
        }
    }

    /// `order` as DataFusion sort expressions (Spark's default: nulls first ascending,
    /// last descending).
    pub fn sort_order(&self, order: &pe::SortOrder) -> ConnectResult<SortExpr> {
        use pe::sort_order::{NullOrdering, SortDirection};
        let child = order
            .child
            .as_deref()
            .ok_or_else(|| ConnectError::invalid("a sort order without an expression"))?;
        let asc = order.direction() != SortDirection::Descending;
        let nulls_first = match order.null_ordering() {
            NullOrdering::SortNullsFirst => true,
            NullOrdering::SortNullsLast => false,
            NullOrdering::SortNullsUnspecified => asc,
        };
        Ok(SortExpr::new(self.expr(child)?.expr, asc, nulls_first))
    }

    /// `child[extraction]` as Spark resolves it by the child's type: a struct's field by
    /// name (`s.a`), an array's element by 0-based index (null out of range), a map's
    /// value by key (null when absent).
    fn extract_value(&self, x: &pe::UnresolvedExtractValue) -> ConnectResult<Named> {
        let (Some(child), Some(extraction)) = (x.child.as_deref(), x.extraction.as_deref()) else {
            return Err(ConnectError::invalid(
                "getItem/getField without a column or key",
            ));
        };
        let child = self.expr(child)?;
        let key = self.expr(extraction)?;
        match self.data_type(&child.expr)? {
            DataType::Struct(fields) => {
                let Expr::Literal(ScalarValue::Utf8(Some(field)), _) = &key.expr else {
                    return Err(ConnectError::analysis(
                        "INVALID_EXTRACT_FIELD_TYPE",
                        format!("Field name should be a non-null string literal, but it's {}", key.name),
                    ));
                };
                let Some(found) = fields
                    .iter()
                    .find(|f| f.name() == field)
                    .or_else(|| fields.iter().find(|f| f.name().eq_ignore_ascii_case(field)))
                else {
                    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                    return Err(ConnectError::analysis(
                        "FIELD_NOT_FOUND",
                        format!("No such struct field `{field}` in {}.", names.join(", ")),
                    ));
                };
                let name = format!("{}.{}", child.name, found.name());
                Ok(Named::new(struct_field(child.expr, found.name())?, name))
            }
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
                let index = cast(key.expr, DataType::Int64);
                // Spark counts from 0 and has no negative indexes; DataFusion counts from 1
                // and from the end below 0.
                let element = datafusion::functions_nested::expr_fn::array_element(
                    child.expr,
                    index.clone() + lit(1i64),
                );
                let e = datafusion::logical_expr::when(index.gt_eq(lit(0i64)), element).end()?;
                Ok(Named::new(e, format!("{}[{}]", child.name, key.name)))
            }
            DataType::Map(..) => {
                let values = datafusion::functions_nested::expr_fn::map_extract(child.expr, key.expr);
                let e = datafusion::functions_nested::expr_fn::array_element(values, lit(1i64));
                Ok(Named::new(e, format!("{}[{}]", child.name, key.name)))
            }
            other => Err(ConnectError::analysis(
                "INVALID_EXTRACT_BASE_FIELD_TYPE",
                format!(
                    "Can't extract a value from {}. Need a complex type [STRUCT, ARRAY, MAP] but got {other}.",
                    child.name
                ),
            )),
        }
    }

    /// A column named by `ident`, from the relation `plan_id` if given.
    pub fn column(&self, ident: &str, plan_id: Option<i64>) -> ConnectResult<Named> {
        let parts = identifier_parts(ident)?;
        let last = parts.last().cloned().unwrap_or_default();
        if let (Some(id), [name]) = (plan_id, parts.as_slice()) {
            // The latest relation with that id whose column is still in the input.
            for (_, columns) in self.plans.iter().rev().filter(|(p, _)| *p == id) {
                let usable = |c: &&Column| self.schema.has_column(c);
                let exact = columns.iter().filter(usable).find(|c| c.name == *name);
                let loose = || {
                    columns
                        .iter()
                        .filter(usable)
                        .find(|c| c.name.eq_ignore_ascii_case(name))
                };
                if let Some(c) = exact.or_else(loose) {
                    return Ok(Named::new(Expr::Column(c.clone()), c.name.clone()));
                }
            }
        }
        if let Some(c) = self.find_column(&parts)? {
            return Ok(Named::new(Expr::Column(c), last));
        }
        // A field of a struct column: `s.a`.
        if parts.len() > 1 {
            if let Some(base) = self.find_column(&parts[..1])? {
                let mut e = Expr::Column(base);
                for p in &parts[1..] {
                    e = struct_field(e, p)?;
                }
                return Ok(Named::new(e, last));
            }
        }
        let names: Vec<String> = self
            .schema
            .iter()
            .map(|(q, f)| match q {
                Some(q) => format!("`{}`.`{}`", q.table(), f.name()),
                None => format!("`{}`", f.name()),
            })
            .collect();
        Err(ConnectError::analysis(
            "UNRESOLVED_COLUMN.WITH_SUGGESTION",
            format!(
                "A column, variable, or function parameter with name `{ident}` cannot be \
                 resolved. Did you mean one of the following? [{}].",
                names.join(", ")
            ),
        ))
    }

    /// The column `parts` names: `name` or `qualifier.name`, exactly or else
    /// case-insensitively; an error when several match.
    fn find_column(&self, parts: &[String]) -> ConnectResult<Option<Column>> {
        let (qualifier, name) = match parts {
            [name] => (None, name),
            [q @ .., name] => (Some(q.join(".")), name),
            [] => return Ok(None),
        };
        let matches = |exact: bool| -> Vec<Column> {
            self.schema
                .iter()
                .filter(|(q, f)| {
                    let name_ok = if exact {
                        f.name() == name
                    } else {
                        f.name().eq_ignore_ascii_case(name)
                    };
                    let qualifier_ok = match (&qualifier, q) {
                        (None, _) => true,
                        (Some(want), Some(have)) => {
                            have.table().eq_ignore_ascii_case(want)
                                || have.to_string().eq_ignore_ascii_case(want)
                        }
                        (Some(_), None) => false,
                    };
                    name_ok && qualifier_ok
                })
                .map(|(q, f)| Column::new(q.cloned(), f.name()))
                .collect()
        };
        let mut found = matches(true);
        if found.is_empty() {
            found = matches(false);
        }
        if qualifier.is_some() && found.is_empty() {
            // A column whose own name contains the dots.
            let whole = parts.join(".");
            found = self
                .schema
                .iter()
                .filter(|(_, f)| f.name() == &whole)
                .map(|(q, f)| Column::new(q.cloned(), f.name()))
                .collect();
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => Err(ConnectError::analysis(
                "AMBIGUOUS_REFERENCE",
                format!(
                    "Reference `{}` is ambiguous, could be: [{}].",
                    parts.join("."),
                    found
                        .iter()
                        .map(|c| c.flat_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    fn args(&self, name: &str, args: &[Expression]) -> ConnectResult<Vec<Named>> {
        args.iter()
            .map(|a| match &a.expr_type {
                // count(*) counts rows: Spark calls it count(1).
                Some(ExprType::UnresolvedStar(_)) if name == "count" => {
                    Ok(Named::new(lit(1i32), "1"))
                }
                _ => self.expr(a),
            })
            .collect()
    }

    fn data_type(&self, e: &Expr) -> ConnectResult<DataType> {
        Ok(e.get_type(self.schema)?)
    }

    /// A call of Spark function `name`.
    fn function(&self, name: &str, args: &[Expression], distinct: bool) -> ConnectResult<Named> {
        let lower = name.to_ascii_lowercase();
        let args = self.args(&lower, args)?;
        let names: Vec<String> = args.iter().map(|a| a.name.clone()).collect();
        let mut exprs: Vec<Expr> = args.into_iter().map(|a| a.expr).collect();
        let arity = |n: usize| -> ConnectResult<()> {
            if exprs.len() == n {
                Ok(())
            } else {
                Err(ConnectError::analysis(
                    "WRONG_NUM_ARGS",
                    format!("{name} takes {n} argument(s), {} given", exprs.len()),
                ))
            }
        };
        // `-x` arrives as "-" with one argument.
        let unary = if lower == "-" && exprs.len() == 1 {
            "negative"
        } else {
            lower.as_str()
        };
        if let Some((build, before, after)) = unary_operator(unary) {
            arity(1)?;
            let e = build(exprs.remove(0));
            return Ok(Named::new(e, format!("{before}{}{after}", names[0])));
        }
        if let Some((op, symbol)) = binary_operator(&lower) {
            arity(2)?;
            let mut right = exprs.pop().unwrap_or_else(|| lit(ScalarValue::Null));
            let mut left = exprs.pop().unwrap_or_else(|| lit(ScalarValue::Null));
            // Spark divides in floating point unless a side is decimal.
            if op == Operator::Divide {
                let (lt, rt) = (self.data_type(&left)?, self.data_type(&right)?);
                let decimal = |t: &DataType| matches!(t, DataType::Decimal128(..));
                if !decimal(&lt) && !decimal(&rt) {
                    left = cast(left, DataType::Float64);
                    right = cast(right, DataType::Float64);
                }
            }
            return Ok(Named::new(
                binary_expr(left, op, right),
                format!("({} {symbol} {})", names[0], names[1]),
            ));
        }
        let joined = names.join(", ");
        let call_name = |n: &str| {
            if distinct {
                format!("{n}(DISTINCT {joined})")
            } else {
                format!("{n}({joined})")
            }
        };
        let simple = |e: Expr, n: String| Ok(Named::new(e, n));
        match lower.as_str() {
            "in" => {
                if exprs.is_empty() {
                    return Err(ConnectError::invalid("isin without a column"));
                }
                let e = exprs.remove(0);
                let list = names[1..].join(", ");
                return simple(
                    e.in_list(exprs, false),
                    format!("({} IN ({list}))", names[0]),
                );
            }
            "like" | "ilike" => {
                arity(2)?;
                let pattern = exprs.pop().unwrap_or_else(|| lit(""));
                let e = exprs.remove(0);
                let like = if lower == "like" {
                    e.like(pattern)
                } else {
                    e.ilike(pattern)
                };
                let word = lower.to_ascii_uppercase();
                return simple(like, format!("{} {word} {}", names[0], names[1]));
            }
            "contains" => {
                arity(2)?;
                let needle = exprs.pop().unwrap_or_else(|| lit(""));
                let hay = exprs.remove(0);
                let found =
                    datafusion::functions::unicode::expr_fn::strpos(hay, needle).gt(lit(0i64));
                return simple(found, call_name("contains"));
            }
            "when" => {
                if exprs.len() < 2 {
                    return Err(ConnectError::invalid(
                        "when without a condition and a value",
                    ));
                }
                let otherwise = (exprs.len() % 2 == 1).then(|| exprs.pop()).flatten();
                let mut pairs = Vec::new();
                let mut text = String::from("CASE");
                let mut it = exprs.into_iter().zip(names.iter());
                while let (Some((c, cn)), Some((v, vn))) = (it.next(), it.next()) {
                    text.push_str(&format!(" WHEN {cn} THEN {vn}"));
                    pairs.push((Box::new(c), Box::new(v)));
                }
                if otherwise.is_some() {
                    text.push_str(&format!(" ELSE {}", names[names.len() - 1]));
                }
                text.push_str(" END");
                let case = Expr::Case(datafusion::logical_expr::Case::new(
                    None,
                    pairs,
                    otherwise.map(Box::new),
                ));
                return simple(case, text);
            }
            "isnan" => {
                arity(1)?;
                let e = cast(exprs.remove(0), DataType::Float64);
                return simple(
                    datafusion::functions::math::expr_fn::isnan(e),
                    call_name("isnan"),
                );
            }
            "log" if exprs.len() == 1 => {
                return simple(
                    datafusion::functions::math::expr_fn::ln(exprs.remove(0)),
                    call_name("ln"),
                );
            }
            "year" | "month" | "quarter" | "hour" | "minute" | "second" | "dayofmonth" | "day"
            | "dayofyear" | "weekofyear" | "dayofweek" => {
                arity(1)?;
                let part = match lower.as_str() {
                    "dayofmonth" | "day" => "day",
                    "dayofyear" => "doy",
                    "weekofyear" => "week",
                    "dayofweek" => "dow",
                    p => p,
                };
                let mut e = cast(date_part(part, exprs.remove(0)), DataType::Int32);
                if lower == "dayofweek" {
                    // Spark numbers Sunday 1 .. Saturday 7.
                    e = e + lit(1i32);
                }
                return simple(e, call_name(&lower));
            }
            "date_add" | "date_sub" | "dateadd" => {
                arity(2)?;
                let days = exprs.pop().unwrap_or_else(|| lit(0i32));
                let date = cast(exprs.remove(0), DataType::Date32);
                let days = cast(days, DataType::Int32);
                let as_int = cast(date, DataType::Int32);
                let shifted = if lower == "date_sub" {
                    as_int - days
                } else {
                    as_int + days
                };
                return simple(cast(shifted, DataType::Date32), call_name(&lower));
            }
            "datediff" => {
                arity(2)?;
                let start = cast(
                    cast(exprs.pop().unwrap_or_else(|| lit(0i32)), DataType::Date32),
                    DataType::Int32,
                );
                let end = cast(cast(exprs.remove(0), DataType::Date32), DataType::Int32);
                return simple(end - start, call_name("datediff"));
            }
            "to_date" if exprs.len() == 2 => {
                let format = exprs.pop().unwrap_or_else(|| lit(""));
                let format = match format {
                    Expr::Literal(ScalarValue::Utf8(Some(f)), _) => lit(chrono_format(&f)),
                    other => other,
                };
                let e = exprs.remove(0);
                return simple(
                    datafusion::functions::datetime::expr_fn::to_date(vec![e, format]),
                    call_name("to_date"),
                );
            }
            "to_date" => {
                arity(1)?;
                return simple(
                    cast(exprs.remove(0), DataType::Date32),
                    call_name("to_date"),
                );
            }
            "to_timestamp" if exprs.len() == 1 => {
                return simple(
                    cast(
                        exprs.remove(0),
                        DataType::Timestamp(TimeUnit::Microsecond, None),
                    ),
                    call_name("to_timestamp"),
                );
            }
            "date_format" => {
                arity(2)?;
                let format = exprs.pop().unwrap_or_else(|| lit(""));
                let format = match format {
                    Expr::Literal(ScalarValue::Utf8(Some(f)), _) => lit(chrono_format(&f)),
                    other => other,
                };
                let e = exprs.remove(0);
                return simple(
                    datafusion::functions::datetime::expr_fn::to_char(e, format),
                    call_name("date_format"),
                );
            }
            "current_date" => {
                return simple(
                    datafusion::functions::datetime::expr_fn::current_date(),
                    "current_date()".into(),
                );
            }
            "regexp_replace" => {
                arity(3)?;
                // Spark replaces every match.
                exprs.push(lit("g"));
                let udf = datafusion::functions::regex::regexp_replace();
                return simple(udf.call(exprs), call_name("regexp_replace"));
            }
            "count" if distinct && exprs.len() > 1 => {
                return Err(ConnectError::unimplemented(
                    "count(DISTINCT) of several columns",
                ));
            }
            "pmod" => {
                arity(2)?;
                let b = exprs.pop().unwrap_or_else(|| lit(1i32));
                let a = exprs.remove(0);
                return simple((a % b.clone() + b.clone()) % b, call_name("pmod"));
            }
            "struct" | "named_struct" if lower == "struct" => {
                let mut pairs = Vec::new();
                for (e, n) in exprs.into_iter().zip(&names) {
                    pairs.push(lit(n.clone()));
                    pairs.push(e);
                }
                return simple(
                    datafusion::functions::core::expr_fn::named_struct(pairs),
                    call_name("struct"),
                );
            }
            "array" => {
                return simple(
                    datafusion::functions_nested::expr_fn::make_array(exprs),
                    call_name("array"),
                );
            }
            "round" | "bround" if exprs.len() == 1 => {
                exprs.push(lit(0i32));
            }
            _ => {}
        }
        let df_name = datafusion_name(&lower);
        let shown = if lower == "mean" {
            "avg"
        } else {
            lower.as_str()
        };
        if let Some(udaf) = self.state.aggregate_functions().get(df_name) {
            let distinct = distinct || lower == "collect_set";
            let agg = Expr::AggregateFunction(AggregateFunction::new_udf(
                Arc::clone(udaf),
                exprs,
                distinct,
                None,
                vec![],
                None,
            ));
            return Ok(Named::new(agg, call_name(shown)));
        }
        if let Some(udf) = self.state.scalar_functions().get(df_name) {
            return Ok(Named::new(udf.call(exprs), call_name(shown)));
        }
        if let Some(udwf) = self.state.window_functions().get(df_name) {
            let f = Expr::from(WindowFunction::new(
                WindowFunctionDefinition::WindowUDF(Arc::clone(udwf)),
                exprs,
            ));
            return Ok(Named::new(f, call_name(shown)));
        }
        Err(ConnectError::unimplemented(format!("function {name}")))
    }

    /// A window function over a partition, order and frame.
    fn window(&self, w: &pe::Window) -> ConnectResult<Named> {
        use pe::window::window_frame::{frame_boundary::Boundary, FrameType};
        let f = w
            .window_function
            .as_deref()
            .ok_or_else(|| ConnectError::invalid("a window without a function"))?;
        let inner = self.expr(f)?;
        let partition_by = w
            .partition_spec
            .iter()
            .map(|e| Ok(self.expr(e)?.expr))
            .collect::<ConnectResult<Vec<_>>>()?;
        let order_by = w
            .order_spec
            .iter()
            .map(|o| self.sort_order(o))
            .collect::<ConnectResult<Vec<_>>>()?;
        let function = match inner.expr {
            Expr::WindowFunction(wf) => *wf,
            Expr::AggregateFunction(agg) => {
                if agg.params.distinct {
                    return Err(ConnectError::unimplemented(
                        "DISTINCT aggregates over a window",
                    ));
                }
                WindowFunction::new(
                    WindowFunctionDefinition::AggregateUDF(agg.func),
                    agg.params.args,
                )
            }
            _ => {
                return Err(ConnectError::analysis(
                    "UNSUPPORTED_EXPR_FOR_WINDOW",
                    format!("{} is not a window or aggregate function", inner.name),
                ))
            }
        };
        let frame = match &w.frame_spec {
            Some(frame) if frame.frame_type() != FrameType::Undefined => {
                let units = if frame.frame_type() == FrameType::Row {
                    WindowFrameUnits::Rows
                } else {
                    WindowFrameUnits::Range
                };
                let bound = |b: &Option<Box<pe::window::window_frame::FrameBoundary>>,
                             lower: bool|
                 -> ConnectResult<WindowFrameBound> {
                    let b = b.as_deref().and_then(|b| b.boundary.as_ref());
                    Ok(match b {
                        None | Some(Boundary::CurrentRow(_)) => WindowFrameBound::CurrentRow,
                        Some(Boundary::Unbounded(_)) => {
                            if lower {
                                WindowFrameBound::Preceding(ScalarValue::Null)
                            } else {
                                WindowFrameBound::Following(ScalarValue::Null)
                            }
                        }
                        Some(Boundary::Value(v)) => {
                            let offset = match &v.expr_type {
                                Some(ExprType::Literal(l)) => literal(l)?.0,
                                _ => {
                                    return Err(ConnectError::unimplemented(
                                        "a window frame bound that is not a literal",
                                    ))
                                }
                            };
                            let n = match offset {
                                ScalarValue::Int32(Some(n)) => i64::from(n),
                                ScalarValue::Int64(Some(n)) => n,
                                other => {
                                    return Err(ConnectError::unimplemented(format!(
                                        "window frame bound {other}"
                                    )))
                                }
                            };
                            let magnitude = if units == WindowFrameUnits::Rows {
                                ScalarValue::UInt64(Some(n.unsigned_abs()))
                            } else {
                                ScalarValue::Int64(Some(n.abs()))
                            };
                            match n.cmp(&0) {
                                std::cmp::Ordering::Less => WindowFrameBound::Preceding(magnitude),
                                std::cmp::Ordering::Equal => WindowFrameBound::CurrentRow,
                                std::cmp::Ordering::Greater => {
                                    WindowFrameBound::Following(magnitude)
                                }
                            }
                        }
                    })
                };
                Some(WindowFrame::new_bounds(
                    units,
                    bound(&frame.lower, true)?,
                    bound(&frame.upper, false)?,
                ))
            }
            _ => None,
        };
        let has_order = !order_by.is_empty();
        let mut builder = Expr::from(function)
            .partition_by(partition_by)
            .order_by(order_by);
        // Spark's default frame: the whole partition, or up to the current row's peers when
        // ordered.
        let default = WindowFrame::new(has_order.then_some(false));
        builder = builder.window_frame(frame.unwrap_or(default));
        let name = format!("{} OVER (...)", inner.name);
        Ok(Named::new(builder.build()?, name))
    }
}

/// Replaces the aggregate calls inside `exprs` by columns `__agg_N`, and returns the
/// aggregates (aliased to those names) beside the rewritten expressions: Spark lets
/// `sum(x) / count(x)` stand in a select list or an `agg`, DataFusion aggregates only
/// bare calls.
pub fn split_aggregates(exprs: Vec<Expr>) -> ConnectResult<(Vec<Expr>, Vec<Expr>)> {
    let mut aggregates: Vec<(Expr, String)> = Vec::new();
    let mut rewritten = Vec::with_capacity(exprs.len());
    for e in exprs {
        let out = e.transform_down(|node| {
            Ok(match node {
                Expr::WindowFunction(_) => Transformed::new(
                    node,
                    false,
                    datafusion::common::tree_node::TreeNodeRecursion::Jump,
                ),
                Expr::AggregateFunction(_) => {
                    let name = match aggregates.iter().find(|(a, _)| *a == node) {
                        Some((_, n)) => n.clone(),
                        None => {
                            let n = format!("__agg_{}", aggregates.len());
                            aggregates.push((node.clone(), n.clone()));
                            n
                        }
                    };
                    Transformed::new(
                        Expr::Column(Column::from_name(name)),
                        true,
                        datafusion::common::tree_node::TreeNodeRecursion::Jump,
                    )
                }
                other => Transformed::no(other),
            })
        })?;
        rewritten.push(out.data);
    }
    Ok((
        aggregates.into_iter().map(|(a, n)| a.alias(n)).collect(),
        rewritten,
    ))
}

/// Whether `e` calls an aggregate outside of a window.
pub fn has_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = e.apply(|node| {
        Ok(match node {
            Expr::WindowFunction(_) => datafusion::common::tree_node::TreeNodeRecursion::Jump,
            Expr::AggregateFunction(_) => {
                found = true;
                datafusion::common::tree_node::TreeNodeRecursion::Stop
            }
            _ => datafusion::common::tree_node::TreeNodeRecursion::Continue,
        })
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_split_on_dots_outside_backquotes() {
        assert_eq!(identifier_parts("a.b").unwrap(), vec!["a", "b"]);
        assert_eq!(identifier_parts("`a.b`.c").unwrap(), vec!["a.b", "c"]);
        assert_eq!(identifier_parts("`x``y`").unwrap(), vec!["x`y"]);
        assert!(identifier_parts("`open").is_err());
    }

    #[test]
    fn spark_date_patterns_become_chrono_formats() {
        assert_eq!(chrono_format("yyyy-MM-dd HH:mm:ss"), "%Y-%m-%d %H:%M:%S");
        assert_eq!(chrono_format("dd/MM/yy 'at' HH"), "%d/%m/%y at %H");
    }

    #[test]
    fn decimal_literals_keep_scale_and_precision() {
        let d = pe::literal::Decimal {
            value: "12.50".into(),
            precision: None,
            scale: None,
        };
        let (v, name) = decimal_literal(&d).unwrap();
        assert_eq!(v, ScalarValue::Decimal128(Some(1250), 4, 2));
        assert_eq!(name, "12.50");
    }
}
