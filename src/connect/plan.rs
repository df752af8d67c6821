//! Spark Connect relations as DataFusion logical plans over a session's catalog, which
//! Ember then cuts into stages and runs like any other query. Relations that need data to
//! be planned (`show`, `tail`, `describe`, a pivot without values) run their input first.

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Column, DFSchema, JoinType, ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame as DFrame;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    cast, col, lit, Expr, ExprFunctionExt, GroupingSet, LogicalPlan, LogicalPlanBuilder,
};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};
use futures::future::BoxFuture;
use prost::Message;

use super::error::{ConnectError, ConnectResult};
use super::expr::{
    has_aggregate, identifier_parts, literal, split_aggregates, Named, PlanColumns, Resolver,
};
use super::proto::expression::ExprType;
use super::proto::relation::RelType;
use super::proto::{self, Relation};
use super::session::ConnectSession;
use super::show::{html_string, show_string};
use super::types::{parse_schema, simple_string, storage_to_vectors, vector_storage_type};

/// Translates the relations of one request.
pub struct Planner<'a> {
    session: &'a ConnectSession,
    /// Output columns of each relation with a plan id, in translation order.
    plans: PlanColumns,
    /// Counter for the aliases given to join sides whose columns clash.
    aliases: usize,
}

fn unimplemented_relation(name: &str) -> ConnectError {
    ConnectError::unimplemented(format!("relation {name}"))
}

impl<'a> Planner<'a> {
    /// A planner for `session`.
    pub fn new(session: &'a ConnectSession) -> Self {
        Self {
            session,
            plans: Vec::new(),
            aliases: 0,
        }
    }

    /// The session this planner plans for.
    pub fn session(&self) -> &'a ConnectSession {
        self.session
    }

    fn ctx(&self) -> &datafusion::prelude::SessionContext {
        self.session.ember.context()
    }

    fn resolver<'b>(
        &'b self,
        schema: &'b DFSchema,
        state: &'b datafusion::execution::session_state::SessionState,
    ) -> Resolver<'b> {
        Resolver {
            schema,
            state,
            plans: &self.plans,
        }
    }

    /// Runs `df` on the cluster and returns its rows.
    pub async fn collect(&self, df: DFrame) -> ConnectResult<Vec<RecordBatch>> {
        Ok(crate::DataFrame::new(self.session.ember.clone(), df)
            .collect()
            .await?)
    }

    fn batches_frame(&self, schema: SchemaRef, batches: Vec<RecordBatch>) -> ConnectResult<DFrame> {
        let table = MemTable::try_new(schema, vec![batches])?;
        Ok(self.ctx().read_table(Arc::new(table))?)
    }

    /// The relation `rel` as a DataFusion DataFrame.
    pub fn relation<'b>(&'b mut self, rel: &'b Relation) -> BoxFuture<'b, ConnectResult<DFrame>> {
        Box::pin(GrowStack(Box::pin(async move {
            // A DataFrame the client cached reads its cached blocks.
            if let Some(cached) = self.cached(rel) {
                self.record(rel, &cached);
                return Ok(cached);
            }
            let start = self.plans.len();
            let df = self.translate(rel, start).await?;
            self.record(rel, &df);
            Ok(df)
        })))
    }

    /// The cached DataFrame for `rel`, if the client cached it.
    fn cached(&self, rel: &Relation) -> Option<DFrame> {
        let key = rel.encode_to_vec();
        let cached = self
            .session
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cached.get(&key).map(|df| df.inner().clone())
    }

    fn record(&mut self, rel: &Relation, df: &DFrame) {
        if let Some(id) = rel.common.as_ref().and_then(|c| c.plan_id) {
            self.plans.push((id, df.schema().columns()));
        }
    }

    /// Gives `df` the qualifier `alias`, and moves the plan-id columns recorded since
    /// `from` (the relations inside `df`) to it.
    fn requalify(&mut self, df: DFrame, alias: &str, from: usize) -> ConnectResult<DFrame> {
        let old = df.schema().clone();
        let df = df.alias(alias)?;
        for (_, columns) in &mut self.plans[from..] {
            for c in columns.iter_mut() {
                if old.has_column(c) {
                    *c = Column::new(Some(alias), c.name.clone());
                }
            }
        }
        Ok(df)
    }

    async fn input(&mut self, input: &Option<Box<Relation>>) -> ConnectResult<DFrame> {
        match input.as_deref() {
            Some(rel) => self.relation(rel).await,
            None => Err(ConnectError::invalid("a relation without its input")),
        }
    }

    async fn translate(&mut self, rel: &Relation, start: usize) -> ConnectResult<DFrame> {
        let Some(kind) = &rel.rel_type else {
            return Err(ConnectError::invalid("a relation without a type"));
        };
        match kind {
            RelType::Read(read) => self.read(read).await,
            RelType::Project(p) => {
                let input = match p.input.as_deref() {
                    Some(rel) => self.relation(rel).await?,
                    None => self.ctx().read_empty()?,
                };
                self.project(input, &p.expressions)
            }
            RelType::Filter(f) => {
                let input = self.input(&f.input).await?;
                let condition = f
                    .condition
                    .as_ref()
                    .ok_or_else(|| ConnectError::invalid("a filter without a condition"))?;
                let state = self.ctx().state();
                let e = self.resolver(input.schema(), &state).expr(condition)?;
                Ok(input.filter(e.expr)?)
            }
            RelType::Join(j) => self.join(j).await,
            RelType::SetOp(s) => self.set_operation(s).await,
            RelType::Sort(s) => {
                let input = self.input(&s.input).await?;
                let state = self.ctx().state();
                let r = self.resolver(input.schema(), &state);
                let order = s
                    .order
                    .iter()
                    .map(|o| r.sort_order(o))
                    .collect::<ConnectResult<Vec<_>>>()?;
                Ok(input.sort(order)?)
            }
            RelType::Limit(l) => {
                let input = self.input(&l.input).await?;
                Ok(input.limit(0, Some(l.limit.max(0) as usize))?)
            }
            RelType::Offset(o) => {
                let input = self.input(&o.input).await?;
                Ok(input.limit(o.offset.max(0) as usize, None)?)
            }
            RelType::Tail(t) => {
                let input = self.input(&t.input).await?;
                let schema: SchemaRef = Arc::new(input.schema().as_arrow().clone());
                let batches = self.collect(input).await?;
                // The last `limit` rows: whole batches from the end, the first one sliced.
                let mut wanted = t.limit.max(0) as usize;
                let mut tail = Vec::new();
                for b in batches.iter().rev() {
                    if wanted == 0 {
                        break;
                    }
                    let take = wanted.min(b.num_rows());
                    tail.push(b.slice(b.num_rows() - take, take));
                    wanted -= take;
                }
                tail.reverse();
                if tail.is_empty() {
                    tail.push(RecordBatch::new_empty(Arc::clone(&schema)));
                }
                self.batches_frame(schema, tail)
            }
            RelType::Aggregate(a) => self.aggregate(a).await,
            RelType::Sql(sql) => self.sql(sql).await,
            RelType::LocalRelation(l) => self.local_relation(l),
            RelType::Sample(s) => {
                if s.with_replacement == Some(true) {
                    return Err(ConnectError::unimplemented("sample with replacement"));
                }
                let input = self.input(&s.input).await?;
                // A hash of each row and the seed: the same sample on every run and
                // after a recomputation, and disjoint ranges for randomSplit's parts.
                let seed = s.seed.unwrap_or_else(rand::random) as u64;
                ember_mllib::feature::hash_sample(input, s.lower_bound, s.upper_bound, seed)
                    .map_err(|e| ConnectError::Ember(crate::Error::Ml(e)))
            }
            RelType::Deduplicate(d) => {
                let input = self.input(&d.input).await?;
                if d.within_watermark == Some(true) {
                    return Err(ConnectError::unimplemented("dropDuplicatesWithinWatermark"));
                }
                if d.all_columns_as_keys == Some(true) || d.column_names.is_empty() {
                    return Ok(input.distinct()?);
                }
                let state = self.ctx().state();
                let r = self.resolver(input.schema(), &state);
                let keys = d
                    .column_names
                    .iter()
                    .map(|n| Ok(r.column(n, None)?.expr))
                    .collect::<ConnectResult<Vec<_>>>()?;
                let all: Vec<Expr> = input
                    .schema()
                    .columns()
                    .into_iter()
                    .map(Expr::Column)
                    .collect();
                Ok(input.distinct_on(keys, all, None)?)
            }
            RelType::Range(r) => self.range(r),
            RelType::SubqueryAlias(a) => {
                let input = self.input(&a.input).await?;
                self.requalify(input, &a.alias, start)
            }
            RelType::Repartition(r) => self.input(&r.input).await,
            RelType::RepartitionByExpression(r) => self.input(&r.input).await,
            RelType::Hint(h) => self.input(&h.input).await,
            RelType::ToDf(t) => {
                let input = self.input(&t.input).await?;
                let columns = input.schema().columns();
                if columns.len() != t.column_names.len() {
                    return Err(ConnectError::analysis(
                        "INVALID_COLUMN_NAMES",
                        format!(
                            "toDF was given {} names for {} columns",
                            t.column_names.len(),
                            columns.len()
                        ),
                    ));
                }
                let exprs = columns
                    .into_iter()
                    .zip(&t.column_names)
                    .map(|(c, n)| Expr::Column(c).alias(n))
                    .collect::<Vec<_>>();
                Ok(input.select(exprs)?)
            }
            RelType::WithColumnsRenamed(w) => {
                let input = self.input(&w.input).await?;
                let mut renames: Vec<(String, String)> = w
                    .rename_columns_map
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                renames.extend(
                    w.renames
                        .iter()
                        .map(|r| (r.col_name.clone(), r.new_col_name.clone())),
                );
                let exprs = input
                    .schema()
                    .columns()
                    .into_iter()
                    .map(|c| {
                        match renames
                            .iter()
                            .find(|(from, _)| from.eq_ignore_ascii_case(&c.name))
                        {
                            Some((_, to)) => Expr::Column(c).alias(to),
                            None => Expr::Column(c),
                        }
                    })
                    .collect::<Vec<_>>();
                Ok(input.select(exprs)?)
            }
            RelType::ShowString(s) => {
                let input = self.input(&s.input).await?;
                let names: Vec<String> = input
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                let rows = s.num_rows.max(0) as usize;
                let batches = self.collect(input.limit(0, Some(rows + 1))?).await?;
                let batches: Vec<RecordBatch> =
                    batches.into_iter().filter(|b| b.num_rows() > 0).collect();
                let text = show_string(
                    &batches,
                    &names,
                    rows,
                    s.truncate.max(0) as usize,
                    s.vertical,
                )?;
                self.one_string("show_string", text)
            }
            RelType::Drop(d) => {
                let input = self.input(&d.input).await?;
                let state = self.ctx().state();
                let r = self.resolver(input.schema(), &state);
                let mut dropped: HashSet<Column> = HashSet::new();
                for e in &d.columns {
                    // Spark ignores columns that do not exist.
                    if let Ok(Named {
                        expr: Expr::Column(c),
                        ..
                    }) = r.expr(e)
                    {
                        dropped.insert(c);
                    }
                }
                let keep: Vec<Expr> = input
                    .schema()
                    .columns()
                    .into_iter()
                    .filter(|c| {
                        !dropped.contains(c)
                            && !d
                                .column_names
                                .iter()
                                .any(|n| n.eq_ignore_ascii_case(&c.name))
                    })
                    .map(Expr::Column)
                    .collect();
                Ok(input.select(keep)?)
            }
            RelType::WithColumns(w) => {
                let input = self.input(&w.input).await?;
                let state = self.ctx().state();
                let r = self.resolver(input.schema(), &state);
                let mut new: Vec<(String, Expr)> = Vec::new();
                for a in &w.aliases {
                    let [name] = a.name.as_slice() else {
                        return Err(ConnectError::unimplemented(
                            "withColumns with a multi-part name",
                        ));
                    };
                    let e = a
                        .expr
                        .as_deref()
                        .ok_or_else(|| ConnectError::invalid("withColumn without an expression"))?;
                    new.push((name.clone(), r.expr(e)?.expr));
                }
                let mut exprs = Vec::new();
                for c in input.schema().columns() {
                    match new
                        .iter()
                        .position(|(n, _)| n.eq_ignore_ascii_case(&c.name))
                    {
                        Some(i) => {
                            let (n, e) = new.remove(i);
                            exprs.push(e.alias(n));
                        }
                        None => exprs.push(Expr::Column(c)),
                    }
                }
                exprs.extend(new.into_iter().map(|(n, e)| e.alias(n)));
                Ok(input.select(exprs)?)
            }
            RelType::FillNa(f) => self.fill_na(f).await,
            RelType::DropNa(d) => self.drop_na(d).await,
            RelType::Summary(s) => {
                let input = self.input(&s.input).await?;
                let stats = if s.statistics.is_empty() {
                    ["count", "mean", "stddev", "min", "25%", "50%", "75%", "max"]
                        .map(String::from)
                        .to_vec()
                } else {
                    s.statistics.clone()
                };
                self.describe(input, &[], &stats).await
            }
            RelType::Describe(d) => {
                let input = self.input(&d.input).await?;
                let stats = ["count", "mean", "stddev", "min", "max"].map(String::from);
                self.describe(input, &d.cols, &stats).await
            }
            RelType::Catalog(c) => self.catalog(c).await,
            RelType::CachedRemoteRelation(r) => {
                let checkpoints = self
                    .session
                    .checkpoints
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                match checkpoints.get(&r.relation_id) {
                    Some(df) => Ok(df.inner().clone()),
                    None => Err(ConnectError::analysis(
                        "INVALID_HANDLE.CACHED_REMOTE_RELATION_NOT_FOUND",
                        format!(
                            "The checkpointed relation {} is unknown to this session (removed, or \
                             the session was released).",
                            r.relation_id
                        ),
                    )),
                }
            }
            RelType::Unpivot(u) => Box::pin(self.unpivot(u)).await,
            RelType::HtmlString(h) => Box::pin(self.html(h)).await,
            RelType::ToSchema(_) => Err(unimplemented_relation("ToSchema (DataFrame.to)")),
            RelType::MapPartitions(_) => Err(unimplemented_relation(
                "MapPartitions (mapInPandas/mapInArrow)",
            )),
            RelType::CollectMetrics(_) => Err(unimplemented_relation("CollectMetrics (observe)")),
            RelType::Parse(_) => Err(unimplemented_relation(
                "Parse (from_csv/from_json on a Dataset)",
            )),
            RelType::GroupMap(_) => Err(unimplemented_relation("GroupMap (applyInPandas)")),
            RelType::CoGroupMap(_) => Err(unimplemented_relation("CoGroupMap")),
            RelType::WithWatermark(_) => Err(unimplemented_relation("WithWatermark (streaming)")),
            RelType::ApplyInPandasWithState(_) => {
                Err(unimplemented_relation("ApplyInPandasWithState"))
            }
            RelType::CachedLocalRelation(_) => {
                Err(unimplemented_relation("CachedLocalRelation (artifacts)"))
            }
            RelType::CommonInlineUserDefinedTableFunction(_) => {
                Err(unimplemented_relation("Python UDTF"))
            }
            RelType::AsOfJoin(_) => Err(unimplemented_relation("AsOfJoin")),
            RelType::CommonInlineUserDefinedDataSource(_) => {
                Err(unimplemented_relation("Python data source"))
            }
            RelType::WithRelations(_) => Err(unimplemented_relation(
                "WithRelations (SQL with DataFrame arguments)",
            )),
            RelType::Transpose(_) => Err(unimplemented_relation("Transpose")),
            RelType::UnresolvedTableValuedFunction(_) => {
                Err(unimplemented_relation("table-valued function"))
            }
            RelType::LateralJoin(_) => Err(unimplemented_relation("LateralJoin")),
            RelType::ChunkedCachedLocalRelation(_) => Err(unimplemented_relation(
                "ChunkedCachedLocalRelation (artifacts)",
            )),
            RelType::RelationChanges(_) => Err(unimplemented_relation("RelationChanges")),
            RelType::NearestByJoin(_) => Err(unimplemented_relation("NearestByJoin")),
            RelType::Replace(r) => self.replace(r).await,
            RelType::Crosstab(c) => Box::pin(self.crosstab(c)).await,
            RelType::Cov(c) => {
                self.two_column_statistic(&c.input, &c.col1, &c.col2, "cov")
                    .await
            }
            RelType::Corr(c) => {
                let method = c.method.as_deref().unwrap_or("pearson");
                if !method.eq_ignore_ascii_case("pearson") {
                    return Err(ConnectError::unimplemented(format!(
                        "correlation method {method} (Ember computes pearson)"
                    )));
                }
                self.two_column_statistic(&c.input, &c.col1, &c.col2, "corr")
                    .await
            }
            RelType::ApproxQuantile(q) => Box::pin(self.approx_quantile(q)).await,
            RelType::FreqItems(f) => Box::pin(self.freq_items(f)).await,
            RelType::SampleBy(s) => Box::pin(self.sample_by(s)).await,
            RelType::MlRelation(m) => super::ml::relation(self, m).await,
            RelType::Extension(_) => Err(unimplemented_relation("extension")),
            RelType::Unknown(_) => Err(unimplemented_relation("Unknown")),
        }
    }

    /// A one-row, one-column string relation.
    fn one_string(&self, name: &str, text: String) -> ConnectResult<DFrame> {
        let batch = RecordBatch::try_from_iter(vec![(
            name,
            Arc::new(StringArray::from(vec![text])) as ArrayRef,
        )])
        .map_err(ember_engine::EngineError::from)?;
        Ok(self.ctx().read_batch(batch)?)
    }

    /// A relation of `columns` (name, values), one row per value.
    fn columns_frame(&self, columns: Vec<(&str, ArrayRef)>) -> ConnectResult<DFrame> {
        if columns.is_empty() {
            let schema = Arc::new(Schema::empty());
            return self.batches_frame(Arc::clone(&schema), vec![RecordBatch::new_empty(schema)]);
        }
        let batch = RecordBatch::try_from_iter(columns).map_err(ember_engine::EngineError::from)?;
        Ok(self.ctx().read_batch(batch)?)
    }

    fn project(
        &mut self,
        input: DFrame,
        expressions: &[proto::Expression],
    ) -> ConnectResult<DFrame> {
        let state = self.ctx().state();
        let r = self.resolver(input.schema(), &state);
        let mut named = Vec::new();
        let mut exploded = None;
        for e in expressions {
            match &e.expr_type {
                Some(ExprType::UnresolvedStar(star)) => {
                    let columns = input.schema().columns();
                    let selected: Vec<Column> = match (&star.unparsed_target, star.plan_id) {
                        (_, Some(id)) => {
                            let of_plan: Vec<Column> = self
                                .plans
                                .iter()
                                .rev()
                                .find(|(p, _)| *p == id)
                                .map(|(_, c)| c.clone())
                                .unwrap_or_default();
                            columns
                                .into_iter()
                                .filter(|c| of_plan.contains(c))
                                .collect()
                        }
                        (Some(target), None) => {
                            let target = target.trim_end_matches(".*");
                            let parts = identifier_parts(target)?;
                            let want = parts.join(".");
                            columns
                                .into_iter()
                                .filter(|c| {
                                    c.relation.as_ref().is_some_and(|q| {
                                        q.table().eq_ignore_ascii_case(&want)
                                            || q.to_string().eq_ignore_ascii_case(&want)
                                    })
                                })
                                .collect()
                        }
                        (None, None) => columns,
                    };
                    named.extend(selected.into_iter().map(|c| Named {
                        name: c.name.clone(),
                        expr: Expr::Column(c),
                    }));
                }
                _ => match explode_of(e) {
                    Some(generator) => {
                        if exploded.is_some() {
                            return Err(ConnectError::analysis(
                                "UNSUPPORTED_GENERATOR.MULTI_GENERATOR",
                                "only one generator (explode) is allowed per select clause",
                            ));
                        }
                        let arg = r.expr(generator.arg)?;
                        exploded = Some((named.len(), generator));
                        named.push(arg);
                    }
                    None => named.push(r.expr(e)?),
                },
            }
        }
        if let Some((at, generator)) = exploded {
            return self.explode(input, named, at, &generator);
        }
        if named.iter().any(|n| has_aggregate(&n.expr)) {
            let exprs: Vec<Expr> = named.into_iter().map(Named::aliased).collect();
            let (aggregates, rewritten) = split_aggregates(exprs)?;
            return Ok(input.aggregate(vec![], aggregates)?.select(rewritten)?);
        }
        Ok(input.select(named.into_iter().map(Named::aliased).collect::<Vec<_>>())?)
    }

    /// A select with a generator at `at` (`named[at]` is its argument): one output row
    /// per element of an array (`col`, after `pos` for `posexplode`) or entry of a map
    /// (`key`, `value`); the outer forms also keep a row whose array or map is null or
    /// empty, with nulls.
    fn explode(
        &self,
        input: DFrame,
        named: Vec<Named>,
        at: usize,
        generator: &Generator<'_>,
    ) -> ConnectResult<DFrame> {
        use datafusion::functions_nested::expr_fn::{cardinality, map_keys, map_values, range};
        let t = datafusion::logical_expr::ExprSchemable::get_type(&named[at].expr, input.schema())?;
        let arg = named[at].expr.clone();
        // The lists unnested side by side (all of one length per row), with their names.
        let (lists, mut names): (Vec<Expr>, Vec<&str>) = match &t {
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => {
                (vec![arg], vec!["col"])
            }
            DataType::Map(..) => (
                vec![map_keys(arg.clone()), map_values(arg)],
                vec!["key", "value"],
            ),
            _ => {
                return Err(ConnectError::analysis(
                    "DATATYPE_MISMATCH.UNEXPECTED_INPUT_TYPE",
                    format!(
                        "{} takes an array or a map; `{}` is {}",
                        generator.function,
                        named[at].name,
                        simple_string(&t)
                    ),
                ))
            }
        };
        let schema = input.schema();
        let mut lists = lists
            .into_iter()
            .map(|list| {
                if !generator.outer {
                    return Ok(list);
                }
                // An empty array or map gives a row of nulls too, as a null one does.
                let empty = cardinality(list.clone()).eq(lit(0u64));
                let list_type = datafusion::logical_expr::ExprSchemable::get_type(&list, schema)?;
                Ok(
                    datafusion::logical_expr::when(empty, lit(ScalarValue::try_from(&list_type)?))
                        .otherwise(list)?,
                )
            })
            .collect::<ConnectResult<Vec<Expr>>>()?;
        if generator.position {
            let length = cast(cardinality(lists[0].clone()), DataType::Int64);
            lists.insert(0, range(lit(0i64), length, lit(1i64)));
            names.insert(0, "pos");
        }
        let names: Vec<String> = match generator.aliases.len() {
            0 => names.into_iter().map(String::from).collect(),
            n if n == names.len() => generator.aliases.clone(),
            n => {
                return Err(ConnectError::analysis(
                    "UDTF_ALIAS_NUMBER_MISMATCH",
                    format!(
                        "{} gives {} columns ({}), but {n} aliases were given",
                        generator.function,
                        names.len(),
                        names.join(", ")
                    ),
                ))
            }
        };
        let inner = |i: usize| format!("__ember_c{i}");
        let list_name = |j: usize| format!("__ember_explode{j}");
        let mut exprs = Vec::with_capacity(named.len() + lists.len());
        let mut out = Vec::with_capacity(named.len() + lists.len());
        for (i, n) in named.into_iter().enumerate() {
            if i != at {
                exprs.push(n.expr.alias(inner(i)));
                out.push(Expr::Column(Column::new_unqualified(inner(i))).alias(n.name));
                continue;
            }
            for (j, (list, name)) in lists.iter().zip(&names).enumerate() {
                exprs.push(list.clone().alias(list_name(j)));
                let column = Expr::Column(Column::new_unqualified(list_name(j)));
                // Spark's position is an int.
                let column = if generator.position && j == 0 {
                    cast(column, DataType::Int32)
                } else {
                    column
                };
                out.push(column.alias(name));
            }
        }
        let unnested: Vec<String> = (0..lists.len()).map(list_name).collect();
        let unnested: Vec<&str> = unnested.iter().map(String::as_str).collect();
        let options = datafusion::common::UnnestOptions::new().with_preserve_nulls(generator.outer);
        Ok(input
            .select(exprs)?
            .unnest_columns_with_options(&unnested, options)?
            .select(out)?)
    }

    async fn read(&mut self, read: &proto::Read) -> ConnectResult<DFrame> {
        use proto::read::ReadType;
        if read.is_streaming {
            return Err(ConnectError::unimplemented("streaming reads (readStream)"));
        }
        match &read.read_type {
            Some(ReadType::NamedTable(t)) => self.table(&t.unparsed_identifier).await,
            Some(ReadType::DataSource(source)) => self.data_source(source).await,
            None => Err(ConnectError::invalid("a read without a source")),
        }
    }

    /// The table or view `name` of the session's catalog.
    pub async fn table(&self, name: &str) -> ConnectResult<DFrame> {
        let parts = identifier_parts(name)?;
        let reference = datafusion::common::TableReference::from(parts.join("."));
        if !self.ctx().table_exist(reference.clone()).unwrap_or(false) {
            return Err(ConnectError::analysis(
                "TABLE_OR_VIEW_NOT_FOUND",
                format!("The table or view `{name}` cannot be found."),
            ));
        }
        Ok(self.ctx().table(reference).await?)
    }

    async fn data_source(&mut self, source: &proto::read::DataSource) -> ConnectResult<DFrame> {
        if !source.predicates.is_empty() {
            return Err(ConnectError::unimplemented("JDBC predicates"));
        }
        let format = source
            .format
            .as_deref()
            .unwrap_or("parquet")
            .to_ascii_lowercase();
        let option = |key: &str| -> Option<&str> {
            source
                .options
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        };
        let truthy = |key: &str, default: bool| {
            option(key).map_or(default, |v| v.eq_ignore_ascii_case("true"))
        };
        let mut paths = source.paths.clone();
        if paths.is_empty() {
            if let Some(p) = option("path") {
                paths.push(p.to_string());
            }
        }
        if paths.is_empty() {
            return Err(ConnectError::invalid(format!(
                "read.{format}() without a path"
            )));
        }
        for p in paths.iter_mut() {
            if let Some(stripped) = p.strip_prefix("file://") {
                *p = stripped.to_string();
            } else if let Some(stripped) = p.strip_prefix("file:") {
                *p = stripped.to_string();
            }
            if !Path::new(p.as_str()).exists() {
                return Err(ConnectError::analysis(
                    "PATH_NOT_FOUND",
                    format!("Path does not exist: file:{p}."),
                ));
            }
        }
        let schema = source
            .schema
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(parse_schema)
            .transpose()?;
        let ctx = self.ctx();
        let first = Path::new(&paths[0]);
        let extension = |default: &str| {
            if first.is_file() {
                first
                    .extension()
                    .map(|e| format!(".{}", e.to_string_lossy()))
                    .unwrap_or_default()
            } else {
                default.to_string()
            }
        };
        match format.as_str() {
            "parquet" => {
                let ext = extension(".parquet");
                let mut options = ParquetReadOptions::default().file_extension(&ext);
                if let Some(s) = &schema {
                    options = options.schema(s);
                }
                Ok(ctx.read_parquet(paths, options).await?)
            }
            "csv" => {
                let ext = extension(".csv");
                let header = truthy("header", false);
                let sep = option("sep").or_else(|| option("delimiter")).unwrap_or(",");
                let sep = *sep.as_bytes().first().unwrap_or(&b',');
                let infer = truthy("inferSchema", false);
                let base = CsvReadOptions::new()
                    .has_header(header)
                    .delimiter(sep)
                    .file_extension(&ext);
                let df = match &schema {
                    Some(s) => ctx.read_csv(paths, base.schema(s)).await?,
                    None if infer => ctx.read_csv(paths, base).await?,
                    None => {
                        // Without inferSchema Spark reads every column as a string.
                        let inferred = ctx.read_csv(paths.clone(), base.clone()).await?;
                        let strings = Schema::new(
                            inferred
                                .schema()
                                .fields()
                                .iter()
                                .map(|f| Field::new(f.name(), DataType::Utf8, true))
                                .collect::<Vec<_>>(),
                        );
                        ctx.read_csv(paths, base.schema(&strings)).await?
                    }
                };
                if header || schema.is_some() {
                    return Ok(df);
                }
                // Spark names header-less columns _c0, _c1, ...
                let exprs = df
                    .schema()
                    .columns()
                    .into_iter()
                    .enumerate()
                    .map(|(i, c)| Expr::Column(c).alias(format!("_c{i}")))
                    .collect::<Vec<_>>();
                Ok(df.select(exprs)?)
            }
            "json" => {
                if truthy("multiLine", false) {
                    return Err(ConnectError::unimplemented("multi-line JSON"));
                }
                let ext = extension(".json");
                let mut options = JsonReadOptions::default().file_extension(&ext);
                if let Some(s) = &schema {
                    options = options.schema(s);
                }
                Ok(ctx.read_json(paths, options).await?)
            }
            "text" => self.read_text(paths).await,
            other => Err(ConnectError::unimplemented(format!(
                "data source format {other}"
            ))),
        }
    }

    /// `spark.read.text(paths)`: one `value` row per line of every file (a directory's
    /// visible files in name order), read on the driver (off the async workers): the
    /// small files ML metadata and configuration are kept in.
    async fn read_text(&self, paths: Vec<String>) -> ConnectResult<DFrame> {
        let lines = tokio::task::spawn_blocking(move || -> ConnectResult<Vec<String>> {
            let mut files = Vec::new();
            for p in &paths {
                let path = Path::new(p);
                if path.is_dir() {
                    let mut inside: Vec<_> = std::fs::read_dir(path)
                        .map_err(|e| ember_engine::EngineError::io(path, e))?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| {
                            f.is_file()
                                && !f
                                    .file_name()
                                    .is_some_and(|n| n.to_string_lossy().starts_with(['.', '_']))
                        })
                        .collect();
                    inside.sort();
                    files.extend(inside);
                } else {
                    files.push(path.to_path_buf());
                }
            }
            let mut lines = Vec::new();
            for f in &files {
                let text =
                    std::fs::read_to_string(f).map_err(|e| ember_engine::EngineError::io(f, e))?;
                lines.extend(text.lines().map(str::to_string));
            }
            Ok(lines)
        })
        .await
        .map_err(|e| ConnectError::internal(format!("reading text files: {e}")))??;
        let values: ArrayRef = Arc::new(arrow::array::StringArray::from(lines));
        self.columns_frame(vec![("value", values)])
    }

    async fn join(&mut self, j: &proto::Join) -> ConnectResult<DFrame> {
        use proto::join::JoinType as J;
        let left_start = self.plans.len();
        let mut left = self.input(&j.left).await?;
        let right_start = self.plans.len();
        let mut right = self.input(&j.right).await?;
        let right_end = self.plans.len();
        let clash = left
            .schema()
            .columns()
            .iter()
            .any(|c| right.schema().has_column(c));
        if clash {
            self.aliases += 1;
            let (l, r) = (format!("_l{}", self.aliases), format!("_r{}", self.aliases));
            // Move only each side's own plan ids: requalify works on a range.
            let right_entries: Vec<_> = self.plans.splice(right_start..right_end, []).collect();
            left = self.requalify(left, &l, left_start)?;
            let at = self.plans.len();
            self.plans.extend(right_entries);
            right = self.requalify(right, &r, at)?;
        }
        let join_type = match j.join_type() {
            J::Unspecified | J::Inner | J::Cross => JoinType::Inner,
            J::FullOuter => JoinType::Full,
            J::LeftOuter => JoinType::Left,
            J::RightOuter => JoinType::Right,
            J::LeftAnti => JoinType::LeftAnti,
            J::LeftSemi => JoinType::LeftSemi,
        };
        if !j.using_columns.is_empty() {
            return self.join_using(left, right, join_type, &j.using_columns);
        }
        match &j.join_condition {
            Some(condition) => {
                let joined = left.schema().join(right.schema())?;
                let state = self.ctx().state();
                let cond = self.resolver(&joined, &state).expr(condition)?;
                Ok(left.join_on(right, join_type, vec![cond.expr])?)
            }
            None => {
                let (state, left_plan) = left.into_parts();
                let (_, right_plan) = right.into_parts();
                let plan = LogicalPlanBuilder::from(left_plan)
                    .cross_join(right_plan)?
                    .build()?;
                Ok(DFrame::new(state, plan))
            }
        }
    }

    /// `left.join(right, [names])`: one output column per key (Spark's USING), then the
    /// other columns of each side.
    fn join_using(
        &mut self,
        left: DFrame,
        right: DFrame,
        join_type: JoinType,
        names: &[String],
    ) -> ConnectResult<DFrame> {
        let state = self.ctx().state();
        let mut left_keys = Vec::new();
        let mut right_keys = Vec::new();
        for n in names {
            let l = match self.resolver(left.schema(), &state).column(n, None)?.expr {
                Expr::Column(c) => c,
                _ => {
                    return Err(ConnectError::invalid(format!(
                        "join key {n} is not a column"
                    )))
                }
            };
            let r = match self.resolver(right.schema(), &state).column(n, None)?.expr {
                Expr::Column(c) => c,
                _ => {
                    return Err(ConnectError::invalid(format!(
                        "join key {n} is not a column"
                    )))
                }
            };
            left_keys.push(l);
            right_keys.push(r);
        }
        let left_columns = left.schema().columns();
        let right_columns = right.schema().columns();
        let lk: Vec<String> = left_keys.iter().map(|c| c.flat_name()).collect();
        let rk: Vec<String> = right_keys.iter().map(|c| c.flat_name()).collect();
        let lk: Vec<&str> = lk.iter().map(String::as_str).collect();
        let rk: Vec<&str> = rk.iter().map(String::as_str).collect();
        let joined = left.join(right, join_type, &lk, &rk, None)?;
        let mut exprs = Vec::new();
        for ((l, r), n) in left_keys.iter().zip(&right_keys).zip(names) {
            let key = match join_type {
                JoinType::Right => Expr::Column(r.clone()),
                JoinType::Full => datafusion::functions::core::expr_fn::coalesce(vec![
                    Expr::Column(l.clone()),
                    Expr::Column(r.clone()),
                ]),
                _ => Expr::Column(l.clone()),
            };
            exprs.push(key.alias(l.name.clone()).alias_if_changed(n.clone())?);
        }
        exprs.extend(
            left_columns
                .into_iter()
                .filter(|c| !left_keys.contains(c))
                .map(Expr::Column),
        );
        if !matches!(join_type, JoinType::LeftSemi | JoinType::LeftAnti) {
            exprs.extend(
                right_columns
                    .into_iter()
                    .filter(|c| !right_keys.contains(c))
                    .map(Expr::Column),
            );
        }
        Ok(joined.select(exprs)?)
    }

    async fn set_operation(&mut self, s: &proto::SetOperation) -> ConnectResult<DFrame> {
        use proto::set_operation::SetOpType;
        let left = self.input(&s.left_input).await?;
        let right = self.input(&s.right_input).await?;
        let all = s.is_all.unwrap_or(false);
        match s.set_op_type() {
            SetOpType::Union => {
                if s.by_name == Some(true) {
                    if s.allow_missing_columns != Some(true) {
                        let names = |df: &DFrame| -> HashSet<String> {
                            df.schema()
                                .fields()
                                .iter()
                                .map(|f| f.name().to_ascii_lowercase())
                                .collect()
                        };
                        let (l, r) = (names(&left), names(&right));
                        if let Some(missing) = l.symmetric_difference(&r).next() {
                            return Err(ConnectError::analysis(
                                "NUM_COLUMNS_MISMATCH",
                                format!("unionByName: column `{missing}` is not on both sides (pass allowMissingColumns=True to fill it with nulls)"),
                            ));
                        }
                    }
                    return Ok(if all {
                        left.union_by_name(right)?
                    } else {
                        left.union_by_name_distinct(right)?
                    });
                }
                let (ln, rn) = (left.schema().fields().len(), right.schema().fields().len());
                if ln != rn {
                    return Err(ConnectError::analysis(
                        "NUM_COLUMNS_MISMATCH",
                        format!("UNION can only be performed on inputs with the same number of columns, but the first input has {ln} columns and the second input has {rn} columns."),
                    ));
                }
                Ok(if all {
                    left.union(right)?
                } else {
                    left.union_distinct(right)?
                })
            }
            SetOpType::Intersect if all => bag_operation(left, right, DFrame::intersect_distinct),
            SetOpType::Except if all => bag_operation(left, right, DFrame::except_distinct),
            SetOpType::Intersect => Ok(left.intersect_distinct(right)?),
            SetOpType::Except => Ok(left.except_distinct(right)?),
            SetOpType::Unspecified => Err(ConnectError::invalid("a set operation without a type")),
        }
    }

    async fn aggregate(&mut self, a: &proto::Aggregate) -> ConnectResult<DFrame> {
        use proto::aggregate::GroupType;
        let input = self.input(&a.input).await?;
        let state = self.ctx().state();
        let r = self.resolver(input.schema(), &state);
        let groups = a
            .grouping_expressions
            .iter()
            .map(|e| r.expr(e))
            .collect::<ConnectResult<Vec<_>>>()?;
        let aggregates = a
            .aggregate_expressions
            .iter()
            .map(|e| r.expr(e))
            .collect::<ConnectResult<Vec<_>>>()?;
        // Output references to each grouping expression, by the name it gets.
        let mut group_exprs = Vec::new();
        let mut group_refs = Vec::new();
        for g in groups {
            match &g.expr {
                Expr::Column(c) => {
                    group_refs.push(Expr::Column(c.clone()));
                    group_exprs.push(g.expr);
                }
                _ => {
                    group_refs.push(col(format!("\"{}\"", g.name.replace('"', "\"\""))));
                    group_exprs.push(g.aliased());
                }
            }
        }
        let grouping = match a.group_type() {
            GroupType::Unspecified | GroupType::Groupby => group_exprs,
            GroupType::Rollup => vec![Expr::GroupingSet(GroupingSet::Rollup(group_exprs))],
            GroupType::Cube => vec![Expr::GroupingSet(GroupingSet::Cube(group_exprs))],
            GroupType::GroupingSets => {
                let sets = a
                    .grouping_sets
                    .iter()
                    .map(|s| {
                        s.grouping_set
                            .iter()
                            .map(|e| Ok(r.expr(e)?.expr))
                            .collect::<ConnectResult<Vec<_>>>()
                    })
                    .collect::<ConnectResult<Vec<_>>>()?;
                vec![Expr::GroupingSet(GroupingSet::GroupingSets(sets))]
            }
            GroupType::Pivot => {
                let pivot = a
                    .pivot
                    .as_ref()
                    .ok_or_else(|| ConnectError::invalid("a pivot without its column"))?;
                return self
                    .pivot(input, group_exprs, group_refs, aggregates, pivot)
                    .await;
            }
        };
        let exprs: Vec<Expr> = aggregates.into_iter().map(Named::aliased).collect();
        let (aggs, rewritten) = split_aggregates(exprs)?;
        let df = input.aggregate(grouping, aggs)?;
        let mut out = group_refs;
        out.extend(rewritten);
        Ok(df.select(out)?)
    }

    /// `groupBy(...).pivot(col, values).agg(...)`: one aggregate per value and aggregate,
    /// each over the rows whose pivot column equals the value.
    async fn pivot(
        &mut self,
        input: DFrame,
        group_exprs: Vec<Expr>,
        group_refs: Vec<Expr>,
        aggregates: Vec<Named>,
        pivot: &proto::aggregate::Pivot,
    ) -> ConnectResult<DFrame> {
        let state = self.ctx().state();
        let column = pivot
            .col
            .as_ref()
            .ok_or_else(|| ConnectError::invalid("a pivot without its column"))?;
        let column = self.resolver(input.schema(), &state).expr(column)?;
        let mut values: Vec<(ScalarValue, String)> = pivot
            .values
            .iter()
            .map(literal)
            .collect::<ConnectResult<_>>()?;
        if values.is_empty() {
            // Spark finds the values first (sorted, at most 10000).
            let distinct = input
                .clone()
                .select(vec![column.expr.clone().alias("v")])?
                .distinct()?
                .sort(vec![col("v").sort(true, true)])?
                .limit(0, Some(10_001))?;
            let batches = self.collect(distinct).await?;
            for b in &batches {
                for i in 0..b.num_rows() {
                    let v = ScalarValue::try_from_array(b.column(0), i)?;
                    let name = if v.is_null() {
                        "null".to_string()
                    } else {
                        v.to_string()
                    };
                    values.push((v, name));
                }
            }
            if values.len() > 10_000 {
                return Err(ConnectError::analysis(
                    "PIVOT_VALUE_DATA_TYPE_MISMATCH",
                    "the pivot column has more than 10000 distinct values".to_string(),
                ));
            }
        }
        let mut aggs = Vec::new();
        let mut out = group_refs;
        for (value, value_name) in &values {
            for a in &aggregates {
                let (inner, agg_name) = match &a.expr {
                    Expr::Alias(alias) => (alias.expr.as_ref().clone(), alias.name.clone()),
                    other => (other.clone(), a.name.clone()),
                };
                let Expr::AggregateFunction(mut f) = inner else {
                    return Err(ConnectError::unimplemented(
                        "a pivot of an expression over aggregates",
                    ));
                };
                let matches = if value.is_null() {
                    column.expr.clone().is_null()
                } else {
                    column.expr.clone().eq(lit(value.clone()))
                };
                f.params.filter = Some(Box::new(matches));
                let name = if aggregates.len() == 1 {
                    value_name.clone()
                } else {
                    format!("{value_name}_{agg_name}")
                };
                let internal = format!("__pivot_{}", aggs.len());
                aggs.push(Expr::AggregateFunction(f).alias(&internal));
                out.push(col(format!("\"{internal}\"")).alias(name));
            }
        }
        Ok(input.aggregate(group_exprs, aggs)?.select(out)?)
    }

    /// A SQL query as a relation, with its parameters.
    pub async fn sql(&self, sql: &proto::Sql) -> ConnectResult<DFrame> {
        let (args, pos_args) = literal_arguments(sql)?;
        let (text, params) = sql_parameters(&sql.query, &args, &pos_args)?;
        let df = self.ctx().sql(&text).await?;
        let df = match params {
            Some(p) => df.with_param_values(p)?,
            None => df,
        };
        Ok(crate::session::catalog_on_driver(self.ctx(), df).await?)
    }

    fn local_relation(&self, l: &proto::LocalRelation) -> ConnectResult<DFrame> {
        let declared = l
            .schema
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(parse_schema)
            .transpose()?;
        let Some(data) = l.data.as_ref().filter(|d| !d.is_empty()) else {
            let schema = Arc::new(declared.unwrap_or_else(Schema::empty));
            return self.batches_frame(Arc::clone(&schema), vec![RecordBatch::new_empty(schema)]);
        };
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(data.to_vec()), None)
                .map_err(|e| ConnectError::invalid(format!("local relation data: {e}")))?;
        let mut schema = reader.schema();
        let mut batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConnectError::invalid(format!("local relation data: {e}")))?;
        if let Some(declared) = declared.filter(|d| d.fields().len() == schema.fields().len()) {
            // The declared schema names and types the columns (all nullable, as Spark's
            // local relations are).
            let target = Arc::new(Schema::new(
                declared
                    .fields()
                    .iter()
                    .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                    .collect::<Vec<_>>(),
            ));
            batches = batches
                .iter()
                .map(|b| {
                    let columns = b
                        .columns()
                        .iter()
                        .zip(target.fields())
                        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                        .collect::<Result<Vec<_>, _>>()?;
                    RecordBatch::try_new(Arc::clone(&target), columns)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    ConnectError::invalid(format!("local relation does not match its schema: {e}"))
                })?;
            schema = target;
        }
        if schema
            .fields()
            .iter()
            .any(|f| f.data_type() == &vector_storage_type())
        {
            (schema, batches) = vector_columns(&schema, &batches)?;
        }
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(Arc::clone(&schema)));
        }
        self.batches_frame(schema, batches)
    }

    fn range(&self, r: &proto::Range) -> ConnectResult<DFrame> {
        let start = r.start.unwrap_or(0);
        let (end, step) = (r.end, r.step);
        if step == 0 {
            return Err(ConnectError::invalid("range step must not be 0"));
        }
        let count = if (step > 0 && end > start) || (step < 0 && end < start) {
            ((i128::from(end) - i128::from(start) + i128::from(step) - i128::from(step.signum()))
                / i128::from(step)) as u64
        } else {
            0
        };
        const MAX_ROWS: u64 = 500_000_000;
        if count > MAX_ROWS {
            return Err(ConnectError::unimplemented(format!(
                "range of {count} rows (Ember builds ranges in memory, up to {MAX_ROWS} rows)"
            )));
        }
        let parts = r
            .num_partitions
            .filter(|n| *n > 0)
            .map(|n| n as u64)
            .unwrap_or_else(|| self.ctx().copied_config().target_partitions() as u64)
            .max(1);
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let mut partitions = Vec::new();
        let per = count.div_ceil(parts).max(1);
        let mut i = 0;
        while i < count || partitions.is_empty() {
            let n = per.min(count - i);
            let values: Int64Array = (i..i + n)
                .map(|k| (i128::from(start) + i128::from(k) * i128::from(step)) as i64)
                .collect();
            let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(values)])
                .map_err(ember_engine::EngineError::from)?;
            partitions.push(vec![batch]);
            i += n;
            if n == 0 {
                break;
            }
        }
        let table = MemTable::try_new(schema, partitions)?;
        Ok(self.ctx().read_table(Arc::new(table))?)
    }

    /// Columns `names` (all if empty) of `df` whose type `keep` accepts.
    fn pick_columns(
        df: &DFrame,
        names: &[String],
        keep: impl Fn(&DataType) -> bool,
    ) -> ConnectResult<Vec<Column>> {
        let all = df.schema().columns();
        if names.is_empty() {
            return Ok(all
                .into_iter()
                .filter(|c| {
                    df.schema()
                        .field_with_name(c.relation.as_ref(), &c.name)
                        .map(|f| keep(f.data_type()))
                        .unwrap_or(false)
                })
                .collect());
        }
        names
            .iter()
            .map(|n| {
                all.iter()
                    .find(|c| c.name.eq_ignore_ascii_case(n))
                    .cloned()
                    .ok_or_else(|| {
                        ConnectError::analysis(
                            "UNRESOLVED_COLUMN.WITH_SUGGESTION",
                            format!("A column with name `{n}` cannot be resolved."),
                        )
                    })
            })
            .collect()
    }

    async fn fill_na(&mut self, f: &proto::NaFill) -> ConnectResult<DFrame> {
        let input = self.input(&f.input).await?;
        let values = f
            .values
            .iter()
            .map(literal)
            .collect::<ConnectResult<Vec<_>>>()?;
        if values.is_empty() {
            return Err(ConnectError::invalid("fillna without a value"));
        }
        if values.len() > 1 && values.len() != f.cols.len() {
            return Err(ConnectError::invalid("fillna: one value per column"));
        }
        let schema = input.schema();
        let accepts = |value: &ScalarValue, t: &DataType| -> bool {
            match value {
                ScalarValue::Utf8(_) => {
                    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
                }
                ScalarValue::Boolean(_) => matches!(t, DataType::Boolean),
                _ => t.is_numeric(),
            }
        };
        let mut targets: Vec<(Column, ScalarValue)> = Vec::new();
        if values.len() == 1 {
            let v = values[0].0.clone();
            for c in Self::pick_columns(&input, &f.cols, |t| accepts(&v, t))? {
                targets.push((c, v.clone()));
            }
        } else {
            for (c, (v, _)) in Self::pick_columns(&input, &f.cols, |_| true)?
                .into_iter()
                .zip(values)
            {
                targets.push((c, v));
            }
        }
        let exprs = schema
            .columns()
            .into_iter()
            .map(|c| {
                let field = schema.field_with_name(c.relation.as_ref(), &c.name)?;
                Ok(match targets.iter().find(|(t, _)| *t == c) {
                    Some((_, v)) if accepts(v, field.data_type()) => {
                        datafusion::functions::core::expr_fn::coalesce(vec![
                            Expr::Column(c.clone()),
                            cast(lit(v.clone()), field.data_type().clone()),
                        ])
                        .alias(c.name.clone())
                    }
                    _ => Expr::Column(c),
                })
            })
            .collect::<ConnectResult<Vec<_>>>()?;
        Ok(input.select(exprs)?)
    }

    /// `df.na.replace`: in the chosen columns (all by default) of a type a replacement
    /// fits, values equal to a replacement's old value (null matches null) become its new
    /// value.
    async fn replace(&mut self, r: &proto::NaReplace) -> ConnectResult<DFrame> {
        let input = self.input(&r.input).await?;
        let pairs = r
            .replacements
            .iter()
            .map(|p| {
                let old = p.old_value.as_ref().map(literal).transpose()?;
                let new = p.new_value.as_ref().map(literal).transpose()?;
                Ok((
                    old.map_or(ScalarValue::Null, |(v, _)| v),
                    new.map_or(ScalarValue::Null, |(v, _)| v),
                ))
            })
            .collect::<ConnectResult<Vec<_>>>()?;
        // A replacement applies to columns of its kind: numbers, strings or booleans.
        let fits = |value: &ScalarValue, t: &DataType| -> bool {
            match value {
                ScalarValue::Null => true,
                ScalarValue::Utf8(_) | ScalarValue::LargeUtf8(_) | ScalarValue::Utf8View(_) => {
                    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
                }
                ScalarValue::Boolean(_) => matches!(t, DataType::Boolean),
                _ => t.is_numeric(),
            }
        };
        let targets = Self::pick_columns(&input, &r.cols, |_| true)?;
        let schema = input.schema();
        let exprs = schema
            .columns()
            .into_iter()
            .map(|c| {
                let field = schema.field_with_name(c.relation.as_ref(), &c.name)?;
                let t = field.data_type();
                let applicable: Vec<&(ScalarValue, ScalarValue)> = pairs
                    .iter()
                    .filter(|(old, new)| {
                        !(old.is_null() && new.is_null()) && fits(old, t) && fits(new, t)
                    })
                    .collect();
                if !targets.contains(&c) || applicable.is_empty() {
                    return Ok(Expr::Column(c));
                }
                let column = Expr::Column(c.clone());
                let arm = |(old, new): &(ScalarValue, ScalarValue)| {
                    let matches = if old.is_null() {
                        column.clone().is_null()
                    } else {
                        column.clone().eq(cast(lit(old.clone()), t.clone()))
                    };
                    (matches, cast(lit(new.clone()), t.clone()))
                };
                let (first, value) = arm(applicable[0]);
                let mut b = datafusion::logical_expr::when(first, value);
                for pair in &applicable[1..] {
                    let (matches, value) = arm(pair);
                    b = b.when(matches, value);
                }
                Ok(b.otherwise(column)?.alias(c.name.clone()))
            })
            .collect::<ConnectResult<Vec<_>>>()?;
        Ok(input.select(exprs)?)
    }

    /// `df.stat.cov` / `df.stat.corr`: one row with the sample covariance or Pearson
    /// correlation of two numeric columns.
    async fn two_column_statistic(
        &mut self,
        input: &Option<Box<Relation>>,
        col1: &str,
        col2: &str,
        name: &str,
    ) -> ConnectResult<DFrame> {
        let input = self.input(input).await?;
        let state = self.ctx().state();
        let r = self.resolver(input.schema(), &state);
        let mut columns = Vec::new();
        for c in [col1, col2] {
            let e = r.column(c, None)?.expr;
            let t = datafusion::logical_expr::ExprSchemable::get_type(&e, input.schema())?;
            if !t.is_numeric() {
                return Err(ConnectError::analysis(
                    "DATATYPE_MISMATCH",
                    format!(
                        "{name} needs numeric columns; `{c}` is {}",
                        simple_string(&t)
                    ),
                ));
            }
            columns.push(cast(e, DataType::Float64));
        }
        let [a, b] = <[Expr; 2]>::try_from(columns).expect("two columns");
        let statistic = if name == "cov" {
            datafusion::functions_aggregate::expr_fn::covar_samp(a, b)
        } else {
            datafusion::functions_aggregate::expr_fn::corr(a, b)
        };
        Ok(input.aggregate(vec![], vec![statistic.alias(name)])?)
    }

    /// The first rows as a notebook's HTML table (`df._repr_html_()`).
    async fn html(&mut self, h: &proto::HtmlString) -> ConnectResult<DFrame> {
        let input = self.input(&h.input).await?;
        let names: Vec<String> = input
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let rows = h.num_rows.max(0) as usize;
        let batches = self.collect(input.limit(0, Some(rows + 1))?).await?;
        let text = html_string(&batches, &names, rows, h.truncate.max(0) as usize)?;
        self.one_string("html_string", text)
    }

    /// `df.unpivot(ids, values, variable, value)`: for each value column, the id columns,
    /// the value column's name and its value (cast to the value columns' common type), all
    /// such rows together.
    async fn unpivot(&mut self, u: &proto::Unpivot) -> ConnectResult<DFrame> {
        let input = self.input(&u.input).await?;
        let state = self.ctx().state();
        let r = self.resolver(input.schema(), &state);
        let ids = u
            .ids
            .iter()
            .map(|e| r.expr(e))
            .collect::<ConnectResult<Vec<Named>>>()?;
        let values = match &u.values {
            Some(v) => v
                .values
                .iter()
                .map(|e| r.expr(e))
                .collect::<ConnectResult<Vec<Named>>>()?,
            None => input
                .schema()
                .columns()
                .into_iter()
                .filter(|c| !ids.iter().any(|id| id.expr == Expr::Column(c.clone())))
                .map(|c| Named {
                    name: c.name.clone(),
                    expr: Expr::Column(c),
                })
                .collect(),
        };
        if values.is_empty() {
            return Err(ConnectError::analysis(
                "UNPIVOT_REQUIRES_VALUE_COLUMNS",
                "At least one value column needs to be specified for UNPIVOT, all columns \
                 specified as ids.",
            ));
        }
        let types = values
            .iter()
            .map(|v| datafusion::logical_expr::ExprSchemable::get_type(&v.expr, input.schema()))
            .collect::<Result<Vec<_>, _>>()?;
        let common = datafusion::logical_expr::type_coercion::binary::type_union_resolution(&types)
            .ok_or_else(|| {
                ConnectError::analysis(
                    "UNPIVOT_VALUE_DATA_TYPE_MISMATCH",
                    format!(
                        "Unpivot value columns must share a least common type, some types do \
                         not: [{}].",
                        values
                            .iter()
                            .zip(&types)
                            .map(|(v, t)| format!("`{}` {}", v.name, simple_string(t)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        let mut parts = values.into_iter().map(|v| {
            let mut exprs: Vec<Expr> = ids
                .iter()
                .map(|id| id.expr.clone().alias(id.name.clone()))
                .collect();
            exprs.push(lit(v.name.clone()).alias(u.variable_column_name.clone()));
            exprs.push(cast(v.expr, common.clone()).alias(u.value_column_name.clone()));
            input.clone().select(exprs)
        });
        let mut out = parts.next().expect("at least one value column")?;
        for part in parts {
            out = out.union(part?)?;
        }
        Ok(out)
    }

    /// `df.crosstab(col1, col2)`: one row per value of `col1`, a column `col1_col2` naming
    /// it, then a column per value of `col2` (sorted) counting the rows with both. Values
    /// are named by their text (`null` for nulls); counted on the cluster.
    async fn crosstab(&mut self, c: &proto::StatCrosstab) -> ConnectResult<DFrame> {
        /// Spark's limit on the distinct values of the second column.
        const MAX_COLUMNS: usize = 10_000;
        let input = self.input(&c.input).await?;
        let state = self.ctx().state();
        let r = self.resolver(input.schema(), &state);
        let text = |name: &str| -> ConnectResult<Expr> {
            let e = r.column(name, None)?.expr;
            Ok(datafusion::functions::expr_fn::coalesce(vec![
                cast(e, DataType::Utf8),
                lit("null"),
            ]))
        };
        let keys = vec![text(&c.col1)?.alias("a"), text(&c.col2)?.alias("b")];
        let counted = input.clone().aggregate(
            keys,
            vec![datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("n")],
        )?;
        let batches = self.collect(counted).await?;
        let mut cells: std::collections::BTreeMap<String, std::collections::BTreeMap<String, i64>> =
            Default::default();
        let mut seconds = std::collections::BTreeSet::new();
        for b in &batches {
            let a = arrow::compute::cast(b.column(0), &DataType::Utf8)
                .map_err(ember_engine::EngineError::from)?;
            let bb = arrow::compute::cast(b.column(1), &DataType::Utf8)
                .map_err(ember_engine::EngineError::from)?;
            let n = arrow::compute::cast(b.column(2), &DataType::Int64)
                .map_err(ember_engine::EngineError::from)?;
            let (a, bb) = (a.as_string::<i32>(), bb.as_string::<i32>());
            let n = n.as_primitive::<arrow::datatypes::Int64Type>();
            for row in 0..b.num_rows() {
                seconds.insert(bb.value(row).to_string());
                cells
                    .entry(a.value(row).to_string())
                    .or_default()
                    .insert(bb.value(row).to_string(), n.value(row));
            }
        }
        if seconds.len() > MAX_COLUMNS {
            return Err(ConnectError::analysis(
                "CROSSTAB_TOO_MANY_VALUES",
                format!(
                    "crosstab makes a column per distinct value of `{}`, which has {} (at most \
                     {MAX_COLUMNS})",
                    c.col2,
                    seconds.len()
                ),
            ));
        }
        let first: ArrayRef = Arc::new(StringArray::from_iter_values(cells.keys()));
        let mut columns: Vec<(String, ArrayRef)> = vec![(format!("{}_{}", c.col1, c.col2), first)];
        for second in &seconds {
            let counts: ArrayRef = Arc::new(Int64Array::from_iter_values(
                cells
                    .values()
                    .map(|row| row.get(second).copied().unwrap_or(0)),
            ));
            columns.push((second.clone(), counts));
        }
        let fields: Vec<Field> = columns
            .iter()
            .map(|(name, a)| Field::new(name, a.data_type().clone(), false))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .map_err(ember_engine::EngineError::from)?;
        Ok(self.ctx().read_batch(batch)?)
    }

    /// `df.approxQuantile(cols, probabilities, relativeError)`: one row, one column
    /// `approx_quantile` holding, per column, its quantiles at the probabilities (as
    /// doubles; nulls and NaNs ignored; an empty column gives an empty list), computed on
    /// the cluster with t-digests (DataFusion's `approx_percentile_cont`), whose error is
    /// their own rather than `relativeError`.
    async fn approx_quantile(&mut self, q: &proto::StatApproxQuantile) -> ConnectResult<DFrame> {
        let input = self.input(&q.input).await?;
        if q.relative_error < 0.0 {
            return Err(ConnectError::analysis(
                "NEGATIVE_VALUE",
                format!(
                    "relativeError must be non-negative, got {}",
                    q.relative_error
                ),
            ));
        }
        if let Some(p) = q.probabilities.iter().find(|p| !(0.0..=1.0).contains(*p)) {
            return Err(ConnectError::analysis(
                "INVALID_PARAMETER_VALUE.PROBABILITY",
                format!("probabilities must be in [0, 1], got {p}"),
            ));
        }
        let state = self.ctx().state();
        let r = self.resolver(input.schema(), &state);
        let mut aggs = Vec::new();
        for c in &q.cols {
            let e = r.column(c, None)?.expr;
            let t = datafusion::logical_expr::ExprSchemable::get_type(&e, input.schema())?;
            if !t.is_numeric() {
                return Err(ConnectError::analysis(
                    "DATATYPE_MISMATCH",
                    format!(
                        "approxQuantile needs numeric columns; `{c}` is {}",
                        simple_string(&t)
                    ),
                ));
            }
            let value = cast(e, DataType::Float64);
            let value = Expr::Case(datafusion::logical_expr::Case::new(
                None,
                vec![(
                    Box::new(datafusion::functions::math::expr_fn::isnan(value.clone())),
                    Box::new(lit(ScalarValue::Float64(None))),
                )],
                Some(Box::new(value)),
            ));
            for p in &q.probabilities {
                let percentile =
                    datafusion::functions_aggregate::approx_percentile_cont::approx_percentile_cont(
                        value.clone().sort(true, false),
                        lit(*p),
                        None,
                    );
                aggs.push(percentile.alias(format!("q{}", aggs.len())));
            }
        }
        let values: Vec<Option<f64>> = if aggs.is_empty() {
            Vec::new()
        } else {
            let batches = self.collect(input.aggregate(vec![], aggs)?).await?;
            let batch = batches
                .iter()
                .find(|b| b.num_rows() > 0)
                .ok_or_else(|| ConnectError::internal("approxQuantile: no aggregate row"))?;
            batch
                .columns()
                .iter()
                .map(|c| {
                    let c = arrow::compute::cast(c, &DataType::Float64)
                        .map_err(ember_engine::EngineError::from)?;
                    let c = c.as_primitive::<arrow::datatypes::Float64Type>();
                    Ok(c.is_valid(0).then(|| c.value(0)))
                })
                .collect::<ConnectResult<_>>()?
        };
        let per_column = q.probabilities.len();
        let mut outer = arrow::array::ListBuilder::new(arrow::array::ListBuilder::new(
            arrow::array::Float64Builder::new(),
        ));
        for column in 0..q.cols.len() {
            let quantiles = &values[column * per_column..(column + 1) * per_column];
            // A column without values has no quantiles (Spark answers an empty list).
            if quantiles.iter().all(Option::is_some) {
                for v in quantiles.iter().flatten() {
                    outer.values().values().append_value(*v);
                }
            }
            outer.values().append(true);
        }
        outer.append(true);
        let column: ArrayRef = Arc::new(outer.finish());
        let batch = RecordBatch::try_from_iter(vec![("approx_quantile", column)])
            .map_err(ember_engine::EngineError::from)?;
        Ok(self.ctx().read_batch(batch)?)
    }

    /// `df.freqItems(cols, support)`: one row, a column `<col>_freqItems` per column
    /// holding the values seen in at least `support` of the rows. Counted exactly on the
    /// cluster (Spark's one-pass sketch may also list values below the support).
    async fn freq_items(&mut self, f: &proto::StatFreqItems) -> ConnectResult<DFrame> {
        let input = self.input(&f.input).await?;
        let support = f.support.unwrap_or(0.01);
        if !(1e-4..=1.0).contains(&support) {
            return Err(ConnectError::analysis(
                "INVALID_PARAMETER_VALUE",
                format!("support must be in [1e-4, 1], got {support}"),
            ));
        }
        let total = crate::DataFrame::new(self.session.ember.clone(), input.clone())
            .count()
            .await?;
        let threshold = (support * total as f64).ceil().max(1.0) as i64;
        let state = self.ctx().state();
        let mut columns: Vec<(String, ArrayRef)> = Vec::new();
        for c in &f.cols {
            let e = self.resolver(input.schema(), &state).column(c, None)?.expr;
            let counted = input.clone().aggregate(
                vec![e.alias("v")],
                vec![datafusion::functions_aggregate::expr_fn::count(lit(1)).alias("n")],
            )?;
            let frequent = counted
                .filter(col("n").gt_eq(lit(threshold)))?
                .select(vec![col("v")])?;
            let batches = self.collect(frequent).await?;
            let schema = Arc::new(Schema::new(vec![Field::new(
                "v",
                datafusion::logical_expr::ExprSchemable::get_type(
                    &self.resolver(input.schema(), &state).column(c, None)?.expr,
                    input.schema(),
                )?,
                true,
            )]));
            let values = arrow::compute::concat_batches(&schema, &batches)
                .map_err(ember_engine::EngineError::from)?;
            let values = Arc::clone(values.column(0));
            let item = Arc::new(Field::new("item", values.data_type().clone(), true));
            let list = arrow::array::ListArray::try_new(
                item,
                arrow::buffer::OffsetBuffer::from_lengths([values.len()]),
                values,
                None,
            )
            .map_err(ember_engine::EngineError::from)?;
            columns.push((format!("{c}_freqItems"), Arc::new(list)));
        }
        let batch = RecordBatch::try_from_iter(columns).map_err(ember_engine::EngineError::from)?;
        Ok(self.ctx().read_batch(batch)?)
    }

    /// `df.sampleBy(col, fractions, seed)`: each row whose `col` equals a stratum is kept
    /// with that stratum's fraction (others are dropped), decided by a hash of the row and
    /// the seed, as `sample` does: the same sample on every run.
    async fn sample_by(&mut self, s: &proto::StatSampleBy) -> ConnectResult<DFrame> {
        let input = self.input(&s.input).await?;
        let e = s
            .col
            .as_ref()
            .ok_or_else(|| ConnectError::invalid("sampleBy without a column"))?;
        let state = self.ctx().state();
        let stratum = self.resolver(input.schema(), &state).expr(e)?.expr;
        let seed = s.seed.unwrap_or_else(rand::random) as u64;
        let mut parts = Vec::new();
        for f in &s.fractions {
            if !(0.0..=1.0).contains(&f.fraction) {
                return Err(ConnectError::analysis(
                    "INVALID_PARAMETER_VALUE",
                    format!("sampleBy fractions must be in [0, 1], got {}", f.fraction),
                ));
            }
            let value = f
                .stratum
                .as_ref()
                .ok_or_else(|| ConnectError::invalid("sampleBy fraction without a stratum"))?;
            let (value, _) = super::expr::literal(value)?;
            let rows = input.clone().filter(stratum.clone().eq(lit(value)))?;
            parts.push(
                ember_mllib::feature::hash_sample(rows, 0.0, f.fraction, seed)
                    .map_err(|e| ConnectError::Ember(crate::Error::Ml(e)))?,
            );
        }
        let mut parts = parts.into_iter();
        let Some(mut out) = parts.next() else {
            return Ok(input.limit(0, Some(0))?);
        };
        for part in parts {
            out = out.union(part)?;
        }
        Ok(out)
    }

    async fn drop_na(&mut self, d: &proto::NaDrop) -> ConnectResult<DFrame> {
        let input = self.input(&d.input).await?;
        let columns = Self::pick_columns(&input, &d.cols, |_| true)?;
        let min = d.min_non_nulls.unwrap_or(columns.len() as i32);
        if columns.is_empty() {
            return Ok(input);
        }
        let non_null = columns
            .into_iter()
            .map(|c| {
                let e = Expr::Column(c);
                let not_nan = e.clone().is_not_null();
                Expr::Case(datafusion::logical_expr::Case::new(
                    None,
                    vec![(Box::new(not_nan), Box::new(lit(1i64)))],
                    Some(Box::new(lit(0i64))),
                ))
            })
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| lit(0i64));
        Ok(input.filter(non_null.gt_eq(lit(i64::from(min))))?)
    }

    /// `describe()` / `summary()`: one row per statistic, one string column per column.
    async fn describe(
        &self,
        input: DFrame,
        cols: &[String],
        stats: &[String],
    ) -> ConnectResult<DFrame> {
        let is_string =
            |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        let columns = Self::pick_columns(&input, cols, |t| t.is_numeric() || is_string(t))?;
        let state = self.ctx().state();
        let mut aggs = Vec::new();
        let mut cells: Vec<Vec<Option<usize>>> = vec![Vec::new(); stats.len()];
        for c in &columns {
            let t = input
                .schema()
                .field_with_name(c.relation.as_ref(), &c.name)?
                .data_type()
                .clone();
            let numeric = t.is_numeric();
            let quoted = format!("\"{}\"", c.name.replace('"', "\"\""));
            let qualified = match &c.relation {
                Some(q) => format!("{q}.{quoted}"),
                None => quoted,
            };
            for (row, stat) in stats.iter().enumerate() {
                let sql = match stat.as_str() {
                    "count" => Some(format!("count({qualified})")),
                    "min" => Some(format!("min({qualified})")),
                    "max" => Some(format!("max({qualified})")),
                    "mean" | "avg" if numeric => Some(format!("avg(CAST({qualified} AS DOUBLE))")),
                    "stddev" if numeric => Some(format!("stddev(CAST({qualified} AS DOUBLE))")),
                    "count_distinct" => Some(format!("count(DISTINCT {qualified})")),
                    p if p.ends_with('%') && numeric => {
                        let fraction: f64 = p
                            .trim_end_matches('%')
                            .parse::<f64>()
                            .map_err(|_| ConnectError::invalid(format!("statistic {p}")))?
                            / 100.0;
                        Some(format!("approx_percentile_cont({fraction}) WITHIN GROUP (ORDER BY CAST({qualified} AS DOUBLE))"))
                    }
                    "mean" | "avg" | "stddev" => None,
                    p if p.ends_with('%') => None,
                    other => {
                        return Err(ConnectError::invalid(format!("unknown statistic {other}")))
                    }
                };
                cells[row].push(
                    sql.map(|s| -> ConnectResult<usize> {
                        let e = state.create_logical_expr(&s, input.schema())?;
                        aggs.push(cast(e, DataType::Utf8).alias(format!("__s{}", aggs.len())));
                        Ok(aggs.len() - 1)
                    })
                    .transpose()?,
                );
            }
        }
        let values: Vec<Option<String>> = if aggs.is_empty() {
            Vec::new()
        } else {
            let batches = self.collect(input.aggregate(vec![], aggs)?).await?;
            let batch = batches
                .into_iter()
                .find(|b| b.num_rows() > 0)
                .ok_or_else(|| ConnectError::internal("describe returned no row"))?;
            (0..batch.num_columns())
                .map(|i| {
                    let a = arrow::compute::cast(batch.column(i), &DataType::Utf8)
                        .map_err(ember_engine::EngineError::from)?;
                    let s = a
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| ConnectError::internal("describe cell"))?;
                    Ok((!s.is_null(0)).then(|| s.value(0).to_string()))
                })
                .collect::<ConnectResult<_>>()?
        };
        let mut out: Vec<(String, ArrayRef)> = vec![(
            "summary".into(),
            Arc::new(StringArray::from(stats.to_vec())) as ArrayRef,
        )];
        for (i, c) in columns.iter().enumerate() {
            let column: StringArray = cells
                .iter()
                .map(|row| row[i].and_then(|k| values[k].clone()))
                .collect();
            out.push((c.name.clone(), Arc::new(column)));
        }
        let batch = RecordBatch::try_from_iter(out).map_err(ember_engine::EngineError::from)?;
        Ok(self.ctx().read_batch(batch)?)
    }

    async fn catalog(&mut self, c: &proto::Catalog) -> ConnectResult<DFrame> {
        use proto::catalog::CatType;
        let Some(kind) = &c.cat_type else {
            return Err(ConnectError::invalid("a catalog request without a type"));
        };
        let bool_frame = |this: &Self, name: &str, v: bool| {
            this.columns_frame(vec![(
                name,
                Arc::new(BooleanArray::from(vec![v])) as ArrayRef,
            )])
        };
        match kind {
            CatType::CurrentDatabase(_) => self.one_string("current_database()", "default".into()),
            CatType::CurrentCatalog(_) => {
                self.one_string("current_catalog()", "spark_catalog".into())
            }
            CatType::SetCurrentDatabase(s) => {
                if s.db_name.eq_ignore_ascii_case("default") {
                    self.columns_frame(vec![])
                } else {
                    Err(ConnectError::analysis(
                        "SCHEMA_NOT_FOUND",
                        format!("The schema `{}` cannot be found.", s.db_name),
                    ))
                }
            }
            CatType::ListDatabases(_) => self.columns_frame(vec![
                (
                    "name",
                    Arc::new(StringArray::from(vec!["default"])) as ArrayRef,
                ),
                (
                    "catalog",
                    Arc::new(StringArray::from(vec!["spark_catalog"])),
                ),
                (
                    "description",
                    Arc::new(StringArray::from(vec!["default database"])),
                ),
                ("locationUri", Arc::new(StringArray::from(vec![""]))),
            ]),
            CatType::DatabaseExists(d) => {
                bool_frame(self, "exists", d.db_name.eq_ignore_ascii_case("default"))
            }
            CatType::ListTables(t) => {
                let mut names = self.table_names()?;
                if let Some(pattern) = &t.pattern {
                    names.retain(|n| like(pattern, n));
                }
                let n = names.len();
                let empty: Vec<Option<&str>> = vec![None; n];
                let namespaces = ListArray::from_iter_primitive::<arrow::datatypes::Int32Type, _, _>(
                    std::iter::repeat_n(Some(Vec::<Option<i32>>::new()), n),
                );
                let namespace = arrow::compute::cast(
                    &namespaces,
                    &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                )
                .map_err(ember_engine::EngineError::from)?;
                self.columns_frame(vec![
                    ("name", Arc::new(StringArray::from(names)) as ArrayRef),
                    ("catalog", Arc::new(StringArray::from(empty.clone()))),
                    ("namespace", namespace),
                    ("description", Arc::new(StringArray::from(empty))),
                    (
                        "tableType",
                        Arc::new(StringArray::from(vec!["TEMPORARY"; n])),
                    ),
                    ("isTemporary", Arc::new(BooleanArray::from(vec![true; n]))),
                ])
            }
            CatType::TableExists(t) => {
                let exists = self
                    .ctx()
                    .table_exist(t.table_name.as_str())
                    .unwrap_or(false);
                bool_frame(self, "exists", exists)
            }
            CatType::ListColumns(l) => {
                let df = self.table(&l.table_name).await?;
                let fields: Vec<_> = df.schema().fields().iter().cloned().collect();
                let n = fields.len();
                let none: Vec<Option<&str>> = vec![None; n];
                self.columns_frame(vec![
                    (
                        "name",
                        Arc::new(StringArray::from(
                            fields.iter().map(|f| f.name().clone()).collect::<Vec<_>>(),
                        )) as ArrayRef,
                    ),
                    ("description", Arc::new(StringArray::from(none))),
                    (
                        "dataType",
                        Arc::new(StringArray::from(
                            fields
                                .iter()
                                .map(|f| simple_string(f.data_type()))
                                .collect::<Vec<_>>(),
                        )),
                    ),
                    (
                        "nullable",
                        Arc::new(BooleanArray::from(
                            fields.iter().map(|f| f.is_nullable()).collect::<Vec<_>>(),
                        )),
                    ),
                    ("isPartition", Arc::new(BooleanArray::from(vec![false; n]))),
                    ("isBucket", Arc::new(BooleanArray::from(vec![false; n]))),
                    ("isCluster", Arc::new(BooleanArray::from(vec![false; n]))),
                ])
            }
            CatType::DropTempView(v) => {
                self.uncache_table(&v.view_name).await?;
                let dropped = self.ctx().deregister_table(v.view_name.as_str())?.is_some();
                bool_frame(self, "dropped", dropped)
            }
            CatType::DropGlobalTempView(v) => {
                let name = datafusion::common::TableReference::partial(
                    super::service::GLOBAL_TEMP,
                    v.view_name.as_str(),
                );
                self.uncache_table(&name.to_string()).await?;
                let dropped = self.ctx().deregister_table(name)?.is_some();
                bool_frame(self, "dropped", dropped)
            }
            CatType::IsCached(t) => {
                self.table(&t.table_name).await?;
                let cached = self
                    .session
                    .cached_tables
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(&t.table_name.to_ascii_lowercase());
                bool_frame(self, "cached", cached)
            }
            CatType::CacheTable(t) => {
                self.cache_table(&t.table_name).await?;
                self.columns_frame(vec![])
            }
            CatType::UncacheTable(t) => {
                self.table(&t.table_name).await?;
                self.uncache_table(&t.table_name).await?;
                self.columns_frame(vec![])
            }
            CatType::ClearCache(_) => {
                let names: Vec<String> = self
                    .session
                    .cached_tables
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                for n in names {
                    self.uncache_table(&n).await?;
                }
                let cached: Vec<crate::DataFrame> = self
                    .session
                    .cached
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .drain()
                    .map(|(_, d)| d)
                    .collect();
                for df in cached {
                    let _ = df.unpersist().await?;
                }
                self.columns_frame(vec![])
            }
            CatType::ListFunctions(_) => Err(ConnectError::unimplemented("catalog.listFunctions")),
            CatType::GetDatabase(_) => Err(ConnectError::unimplemented("catalog.getDatabase")),
            CatType::GetTable(_) => Err(ConnectError::unimplemented("catalog.getTable")),
            CatType::GetFunction(_) => Err(ConnectError::unimplemented("catalog.getFunction")),
            CatType::FunctionExists(_) => {
                Err(ConnectError::unimplemented("catalog.functionExists"))
            }
            CatType::CreateExternalTable(_) | CatType::CreateTable(_) => {
                Err(ConnectError::unimplemented("catalog.createTable"))
            }
            CatType::RecoverPartitions(_) => {
                Err(ConnectError::unimplemented("catalog.recoverPartitions"))
            }
            CatType::RefreshTable(_) | CatType::RefreshByPath(_) => {
                Err(ConnectError::unimplemented("catalog.refreshTable"))
            }
            CatType::SetCurrentCatalog(_) | CatType::ListCatalogs(_) => Err(
                ConnectError::unimplemented("catalogs other than spark_catalog"),
            ),
            _ => Err(ConnectError::unimplemented("this catalog operation")),
        }
    }

    fn table_names(&self) -> ConnectResult<Vec<String>> {
        let ctx = self.ctx();
        let state = ctx.state();
        let options = state.config().options();
        let catalog = ctx
            .catalog(&options.catalog.default_catalog)
            .ok_or_else(|| ConnectError::internal("the session has no default catalog"))?;
        let schema = catalog
            .schema(&options.catalog.default_schema)
            .ok_or_else(|| ConnectError::internal("the session has no default schema"))?;
        let mut names = schema.table_names();
        names.sort();
        Ok(names)
    }

    /// `spark.catalog.cacheTable(name)`: the table's rows cached on the executors and the
    /// name registered over them.
    pub async fn cache_table(&self, name: &str) -> ConnectResult<()> {
        let key = name.to_ascii_lowercase();
        if self
            .session
            .cached_tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            return Ok(());
        }
        let df = self.table(name).await?;
        let original = self.ctx().table_provider(name).await?;
        let cached = crate::DataFrame::new(self.session.ember.clone(), df)
            .cache()
            .await?;
        self.ctx().deregister_table(name)?;
        self.ctx()
            .register_table(name, cached.inner().clone().into_view())?;
        self.session
            .cached_tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, super::session::CachedTable { cached, original });
        Ok(())
    }

    /// Drops the cache of table `name` (if cached) and registers its original again.
    pub async fn uncache_table(&self, name: &str) -> ConnectResult<()> {
        let entry = self
            .session
            .cached_tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name.to_ascii_lowercase());
        if let Some(entry) = entry {
            self.ctx().deregister_table(name)?;
            self.ctx().register_table(name, entry.original)?;
            let _ = entry.cached.unpersist().await?;
        }
        Ok(())
    }
}

/// A generator at the top of a select expression (`explode`, `posexplode` and their outer
/// forms, possibly aliased).
struct Generator<'a> {
    /// Its argument.
    arg: &'a proto::Expression,
    /// Its name, for errors.
    function: String,
    /// Whether a null or empty argument gives a row of nulls.
    outer: bool,
    /// Whether a `pos` column comes first.
    position: bool,
    /// The names given to its columns (none: Spark's defaults).
    aliases: Vec<String>,
}

/// The generator `e` is, if it is one.
fn explode_of(e: &proto::Expression) -> Option<Generator<'_>> {
    match &e.expr_type {
        Some(ExprType::UnresolvedFunction(f)) if f.arguments.len() == 1 => {
            let function = f.function_name.to_ascii_lowercase();
            let (outer, position) = match function.as_str() {
                "explode" => (false, false),
                "explode_outer" => (true, false),
                "posexplode" => (false, true),
                "posexplode_outer" => (true, true),
                _ => return None,
            };
            Some(Generator {
                arg: &f.arguments[0],
                function,
                outer,
                position,
                aliases: Vec::new(),
            })
        }
        Some(ExprType::Alias(a)) if !a.name.is_empty() => {
            let inner = a.expr.as_deref()?;
            explode_of(inner).map(|g| Generator {
                aliases: a.name.clone(),
                ..g
            })
        }
        _ => None,
    }
}

/// Local rows whose `VectorUDT` columns (`Vectors.dense(...)` in `createDataFrame`) become
/// Ember's vector columns, which have one size per column.
fn vector_columns(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> ConnectResult<(SchemaRef, Vec<RecordBatch>)> {
    let all = arrow::compute::concat_batches(schema, batches)
        .map_err(|e| ConnectError::invalid(format!("local relation data: {e}")))?;
    let storage = vector_storage_type();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(all.columns()) {
        if f.data_type() == &storage {
            let v = storage_to_vectors(f.name(), c)?;
            fields.push(Field::new(f.name(), v.data_type().clone(), true));
            columns.push(v);
        } else {
            fields.push(f.as_ref().clone());
            columns.push(Arc::clone(c));
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
        .map_err(|e| ConnectError::invalid(format!("local relation data: {e}")))?;
    Ok((schema, vec![batch]))
}

/// INTERSECT ALL / EXCEPT ALL with bag semantics (a row kept as many times as it is in
/// excess): each copy of a row is numbered on both sides, and the numbered rows go
/// through the distinct operation.
fn bag_operation(
    left: DFrame,
    right: DFrame,
    op: fn(DFrame, DFrame) -> datafusion::error::Result<DFrame>,
) -> ConnectResult<DFrame> {
    const COPY: &str = "__ember_copy";
    let number = |df: DFrame| -> ConnectResult<DFrame> {
        let columns: Vec<Expr> = df
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let copy = datafusion::functions_window::expr_fn::row_number()
            .partition_by(columns.clone())
            .build()?
            .alias(COPY);
        let mut exprs = columns;
        exprs.push(copy);
        Ok(df.select(exprs)?)
    };
    let names: Vec<String> = left
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let out = op(number(left)?, number(right)?)?;
    let keep: Vec<Expr> = out
        .schema()
        .columns()
        .into_iter()
        .filter(|c| c.name != COPY)
        .zip(names)
        .map(|(c, n)| Expr::Column(c).alias(n))
        .collect();
    Ok(out.select(keep)?)
}

/// Whether `name` matches a catalog pattern (`*` any text, `|` alternatives).
fn like(pattern: &str, name: &str) -> bool {
    fn matches(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| matches(rest, &s[i..])),
            Some((c, rest)) => s
                .split_first()
                .is_some_and(|(h, t)| h.eq_ignore_ascii_case(c) && matches(rest, t)),
        }
    }
    let s: Vec<char> = name.chars().collect();
    pattern
        .split('|')
        .any(|alt| matches(&alt.trim().chars().collect::<Vec<_>>(), &s))
}

/// A SQL statement's named and positional arguments as literals (clients send them as
/// literal expressions or, older ones, as literals).
pub fn literal_arguments(
    sql: &proto::Sql,
) -> ConnectResult<(
    std::collections::HashMap<String, proto::expression::Literal>,
    Vec<proto::expression::Literal>,
)> {
    let as_literal = |e: &proto::Expression| match &e.expr_type {
        Some(ExprType::Literal(l)) => Ok(l.clone()),
        _ => Err(ConnectError::unimplemented(
            "SQL arguments that are not literals",
        )),
    };
    let mut args = sql.args.clone();
    for (k, e) in &sql.named_arguments {
        args.insert(k.clone(), as_literal(e)?);
    }
    let mut pos_args = sql.pos_args.clone();
    for e in &sql.pos_arguments {
        pos_args.push(as_literal(e)?);
    }
    Ok((args, pos_args))
}

/// The query with Spark's parameter markers (`:name`, `?`) as DataFusion's (`$name`, `$1`),
/// and the values to bind.
pub fn sql_parameters(
    query: &str,
    args: &std::collections::HashMap<String, proto::expression::Literal>,
    pos_args: &[proto::expression::Literal],
) -> ConnectResult<(String, Option<ParamValues>)> {
    if args.is_empty() && pos_args.is_empty() {
        return Ok((query.to_string(), None));
    }
    let mut out = String::with_capacity(query.len());
    let mut chars = query.chars().peekable();
    let mut quote: Option<char> = None;
    let mut position = 0;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"' | '`') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') if !pos_args.is_empty() => {
                position += 1;
                out.push_str(&format!("${position}"));
            }
            (None, ':')
                if !args.is_empty()
                    && chars.peek().is_some_and(|n| n.is_alphabetic() || *n == '_') =>
            {
                out.push('$');
            }
            (None, c) => out.push(c),
        }
    }
    let params = if !pos_args.is_empty() {
        ParamValues::List(
            pos_args
                .iter()
                .map(|l| Ok(literal(l)?.0.into()))
                .collect::<ConnectResult<Vec<_>>>()?,
        )
    } else {
        ParamValues::Map(
            args.iter()
                .map(|(k, l)| Ok((k.clone(), literal(l)?.0.into())))
                .collect::<ConnectResult<_>>()?,
        )
    };
    Ok((out, Some(params)))
}

/// Whether a SQL statement's plan is a query (returned as a relation and run lazily) rather
/// than a command run at once.
pub fn is_query(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::DescribeTable(_)
    )
}

/// Stack kept free below a relation's translation: one level of the recursion (a
/// relation's translation polling its input's) uses well under this, even unoptimized.
const RELATION_RED_ZONE: usize = 512 * 1024;
/// Size of each stack segment added when the red zone is reached.
const RELATION_STACK_SEGMENT: usize = 8 * 1024 * 1024;

/// Polls a relation's translation on a fresh stack segment when the current one runs low,
/// so a plan nested as deep as a client builds it (hundreds of chained `withColumn`s)
/// cannot overflow a runtime worker's fixed stack.
struct GrowStack<F>(Pin<Box<F>>);

impl<F: Future> Future for GrowStack<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let inner = self.0.as_mut();
        stacker::maybe_grow(RELATION_RED_ZONE, RELATION_STACK_SEGMENT, || inner.poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_patterns_match_like_spark() {
        assert!(like("tab*", "table1"));
        assert!(like("x|tab*", "TABLE1"));
        assert!(!like("tab", "table1"));
    }

    #[test]
    fn parameter_markers_become_datafusion_placeholders() {
        let mut args = std::collections::HashMap::new();
        args.insert(
            "lo".to_string(),
            proto::expression::Literal {
                literal_type: Some(proto::expression::literal::LiteralType::Long(3)),
            },
        );
        let (q, p) = sql_parameters("SELECT ':lo', x FROM t WHERE x > :lo", &args, &[]).unwrap();
        assert_eq!(q, "SELECT ':lo', x FROM t WHERE x > $lo");
        assert!(matches!(p, Some(ParamValues::Map(m)) if m.len() == 1));
    }
}
