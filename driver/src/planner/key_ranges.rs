//! Co-partitioned scans from file statistics: when the files of tables joined on a key
//! hold disjoint ranges of that key, their scans read them grouped by range, so that
//! partition `i` of every side holds the same keys and the join needs no shuffle.
//!
//! Tables are often written in key order: an orders table and its line items split into
//! files by order number, events by day. Each Parquet file's footer bounds its keys. When
//! every file of the joined scans fits in one of a set of key ranges (no file of either
//! side straddles a boundary), [`KeyRangeScans`] regroups each scan's files by range and
//! declares the scan range-partitioned on the key (DataFusion's `Partitioning::Range`).
//! DataFusion's distribution rules then see both sides of the join co-partitioned (same
//! split points) and insert no repartition; in Ember that removes a stage boundary: the
//! scans, filters, joins and partial aggregates above them run in one stage, and the rows
//! never leave the task that read them. Spark calls this a storage-partitioned join.
//!
//! The rule only declares what the files prove (exact bounds from the footers, no nulls in
//! the key); whether a join or an aggregate may use it is DataFusion's check, which falls
//! back to repartitioning both sides when the declared partitionings differ.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinSide, ScalarValue, SplitPoint};
use datafusion::config::ConfigOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, Partitioning, PhysicalSortExpr, RangePartitioning};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::utils::build_join_schema;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

/// The physical optimizer rule of this module (see the module's documentation). It runs
/// before DataFusion enforces distributions, while partitioned joins still have no
/// repartitions below them.
#[derive(Debug, Default)]
pub struct KeyRangeScans;

impl PhysicalOptimizerRule for KeyRangeScans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let partitions = config.execution.target_partitions;
        if partitions < 2 {
            return Ok(plan);
        }
        let scans = co_partitioned_scans(&plan, partitions);
        if scans.is_empty() {
            return Ok(plan);
        }
        plan.transform_up(|node| match scans.get(&address(&node)) {
            Some(scan) => Ok(Transformed::yes(scan.rewrite(&node)?)),
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "ember_key_range_scans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A column of a file scan: the scan (by the address of its node in the plan being
/// optimized) and the column's index in the scanned table's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ScanColumn {
    scan: usize,
    column: usize,
}

/// The address of a plan node, which names it while one plan is optimized.
fn address(node: &Arc<dyn ExecutionPlan>) -> usize {
    Arc::as_ptr(node).cast::<()>() as usize
}

/// What one scan becomes: its files grouped by key range, range-partitioned on `column`.
#[derive(Debug)]
struct RangedScan {
    column: usize,
    groups: Vec<Vec<PartitionedFile>>,
    split_points: Vec<SplitPoint>,
}

impl RangedScan {
    fn rewrite(&self, node: &Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(config) = file_scan(node) else {
            return Ok(Arc::clone(node));
        };
        let schema = config.file_source().table_schema().table_schema();
        let key = Column::new(schema.field(self.column).name(), self.column);
        let options = SortOptions {
            descending: false,
            nulls_first: false,
        };
        let Some(ordering) = LexOrdering::new([PhysicalSortExpr::new(Arc::new(key), options)])
        else {
            return Ok(Arc::clone(node));
        };
        let range = RangePartitioning::try_new(ordering, self.split_points.clone())?;
        let groups = self.groups.iter().cloned().map(FileGroup::new).collect();
        let config = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .with_output_partitioning(Some(Partitioning::Range(range)))
            .build();
        Ok(DataSourceExec::from_data_source(config) as _)
    }
}

/// The file scan configuration of `node`, when it is a scan of files.
fn file_scan(node: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    node.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// The scans of `plan` to range-partition, by node address: the key columns of its
/// partitioned hash joins, traced down to the scans they come from, joined into groups of
/// columns compared with each other; each group whose files fall into disjoint key ranges
/// gets one set of split points, shared by all its scans.
fn co_partitioned_scans(
    plan: &Arc<dyn ExecutionPlan>,
    partitions: usize,
) -> HashMap<usize, RangedScan> {
    let mut nodes = HashMap::new();
    let mut pairs = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            if *join.partition_mode() == PartitionMode::Partitioned {
                for (left, right) in join.on() {
                    let left = trace_expr(join.left(), left, &mut nodes);
                    let right = trace_expr(join.right(), right, &mut nodes);
                    if let (Some(left), Some(right)) = (left, right) {
                        if left.scan != right.scan {
                            pairs.push((left, right));
                        }
                    }
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut groups = column_groups(&pairs);
    // The group that reads the most bytes picks first when a scan is in two groups.
    let bytes = |group: &Vec<ScanColumn>| -> u64 {
        group
            .iter()
            .filter_map(|c| nodes.get(&c.scan).and_then(file_scan))
            .flat_map(|config| config.file_groups.iter().flat_map(|g| g.files()))
            .map(|f| f.object_meta.size)
            .sum()
    };
    groups.sort_by_cached_key(|g| std::cmp::Reverse(bytes(g)));
    let mut chosen = HashMap::new();
    for group in groups {
        let members: Vec<(ScanColumn, &FileScanConfig)> = group
            .iter()
            .filter(|c| !chosen.contains_key(&c.scan))
            .filter_map(|c| Some((*c, nodes.get(&c.scan).and_then(file_scan)?)))
            .collect();
        if members.len() < 2 {
            continue;
        }
        let Some(ranges) = key_ranges(&members, partitions) else {
            continue;
        };
        for (member, _) in &members {
            let groups = ranges.groups_of(member.scan);
            chosen.insert(
                member.scan,
                RangedScan {
                    column: member.column,
                    groups,
                    split_points: ranges.split_points.clone(),
                },
            );
        }
    }
    chosen
}

/// The connected groups of columns that `pairs` compare, each sorted.
fn column_groups(pairs: &[(ScanColumn, ScanColumn)]) -> Vec<Vec<ScanColumn>> {
    let mut parent: BTreeMap<ScanColumn, ScanColumn> = BTreeMap::new();
    fn root(parent: &mut BTreeMap<ScanColumn, ScanColumn>, c: ScanColumn) -> ScanColumn {
        let mut at = c;
        while let Some(&up) = parent.get(&at) {
            if up == at {
                break;
            }
            at = up;
        }
        parent.insert(c, at);
        at
    }
    for (a, b) in pairs {
        parent.entry(*a).or_insert(*a);
        parent.entry(*b).or_insert(*b);
        let (ra, rb) = (root(&mut parent, *a), root(&mut parent, *b));
        if ra != rb {
            parent.insert(ra.max(rb), ra.min(rb));
        }
    }
    let columns: Vec<ScanColumn> = parent.keys().copied().collect();
    let mut groups: BTreeMap<ScanColumn, Vec<ScanColumn>> = BTreeMap::new();
    for c in columns {
        let r = root(&mut parent, c);
        groups.entry(r).or_default().push(c);
    }
    groups.into_values().collect()
}

/// The scan column that `expr`, over `plan`'s output, reads unchanged: a column traced
/// through projections, filters, joins (to the side it comes from) and the grouping
/// columns of aggregates, down to a file scan. `None` for a computed value or another
/// operator.
fn trace_expr(
    plan: &Arc<dyn ExecutionPlan>,
    expr: &Arc<dyn PhysicalExpr>,
    nodes: &mut HashMap<usize, Arc<dyn ExecutionPlan>>,
) -> Option<ScanColumn> {
    trace(plan, expr.downcast_ref::<Column>()?.index(), nodes)
}

fn trace(
    plan: &Arc<dyn ExecutionPlan>,
    index: usize,
    nodes: &mut HashMap<usize, Arc<dyn ExecutionPlan>>,
) -> Option<ScanColumn> {
    if let Some(config) = file_scan(plan) {
        let column = match config.file_source().projection() {
            Some(projection) => projection
                .iter()
                .nth(index)?
                .expr
                .downcast_ref::<Column>()?
                .index(),
            None => index,
        };
        nodes.insert(address(plan), Arc::clone(plan));
        return Some(ScanColumn {
            scan: address(plan),
            column,
        });
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let index = match filter.projection() {
            Some(projection) => *projection.get(index)?,
            None => index,
        };
        return trace(filter.input(), index, nodes);
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let column = projection
            .expr()
            .get(index)?
            .expr
            .downcast_ref::<Column>()?
            .index();
        return trace(projection.input(), column, nodes);
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let index = match &join.projection {
            Some(projection) => *projection.get(index)?,
            None => index,
        };
        let (_, columns) = build_join_schema(
            join.left().schema().as_ref(),
            join.right().schema().as_ref(),
            join.join_type(),
        );
        let column = columns.get(index)?;
        let side = match column.side {
            JoinSide::Left => join.left(),
            JoinSide::Right => join.right(),
            JoinSide::None => return None,
        };
        return trace(side, column.index, nodes);
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let group_by = aggregate.group_expr();
        if !group_by.is_single() {
            return None;
        }
        let (expr, _) = group_by.expr().get(index)?;
        let column = expr.downcast_ref::<Column>()?.index();
        return trace(aggregate.input(), column, nodes);
    }
    None
}

/// One file's key bounds and size.
#[derive(Debug)]
struct FileKeys {
    scan: usize,
    file: PartitionedFile,
    min: ScalarValue,
    max: ScalarValue,
}

/// Key ranges shared by a group of scans: the split points and every file's range.
#[derive(Debug)]
struct KeyRanges {
    split_points: Vec<SplitPoint>,
    /// (range, scan, file) for every file of every scan of the group.
    files: Vec<(usize, usize, PartitionedFile)>,
}

impl KeyRanges {
    /// The files of `scan`, one group per range (a range may have none).
    fn groups_of(&self, scan: usize) -> Vec<Vec<PartitionedFile>> {
        let mut groups = vec![Vec::new(); self.split_points.len() + 1];
        for (range, _, file) in self.files.iter().filter(|(_, s, _)| *s == scan) {
            groups[*range].push(file.clone());
        }
        groups
    }
}

/// The key ranges of `members` (scan columns compared with each other): the files of all
/// of them ordered by smallest key, overlapping files merged into runs, and the runs cut
/// into up to `partitions` ranges of about equal bytes. `None` when a file's bounds are not
/// exact, a key may be null, the key types differ, or fewer than two runs remain.
fn key_ranges(members: &[(ScanColumn, &FileScanConfig)], partitions: usize) -> Option<KeyRanges> {
    let mut files = Vec::new();
    for (member, config) in members {
        let mut seen = HashSet::new();
        for file in config.file_groups.iter().flat_map(|g| g.files()) {
            if !seen.insert(file.object_meta.location.clone()) {
                continue;
            }
            let stats = file
                .statistics
                .as_ref()?
                .column_statistics
                .get(member.column)?;
            let (Precision::Exact(min), Precision::Exact(max), Precision::Exact(0)) =
                (&stats.min_value, &stats.max_value, &stats.null_count)
            else {
                return None;
            };
            if min.is_null() || max.is_null() {
                return None;
            }
            let mut whole = file.clone();
            whole.range = None;
            files.push(FileKeys {
                scan: member.scan,
                file: whole,
                min: min.clone(),
                max: max.clone(),
            });
        }
    }
    let key_type = files.first()?.min.data_type();
    if files
        .iter()
        .any(|f| f.min.data_type() != key_type || f.max.data_type() != key_type)
    {
        return None;
    }
    let mut failed = false;
    files.sort_by(|a, b| {
        a.min.partial_cmp(&b.min).unwrap_or_else(|| {
            failed = true;
            Ordering::Equal
        })
    });
    if failed {
        return None;
    }
    // Runs of overlapping files: a run starts at a file whose smallest key is above every
    // key of the files before it.
    let mut runs: Vec<(usize, u64)> = Vec::new(); // (first file, bytes)
    let mut run_max: Option<ScalarValue> = None;
    for (i, f) in files.iter().enumerate() {
        match &run_max {
            Some(max) if f.min.partial_cmp(max)? != Ordering::Greater => {
                if f.max.partial_cmp(max)? == Ordering::Greater {
                    run_max = Some(f.max.clone());
                }
            }
            _ => {
                runs.push((i, 0));
                run_max = Some(f.max.clone());
            }
        }
        runs.last_mut()?.1 += f.file.object_meta.size;
    }
    let cuts = balanced_cuts(&runs.iter().map(|r| r.1).collect::<Vec<_>>(), partitions);
    if cuts.is_empty() {
        return None;
    }
    let split_points = cuts
        .iter()
        .map(|&run| SplitPoint::new(vec![files[runs[run].0].min.clone()]))
        .collect();
    let mut assigned = Vec::with_capacity(files.len());
    let mut range = 0;
    for (i, f) in files.into_iter().enumerate() {
        while range < cuts.len() && i >= runs[cuts[range]].0 {
            range += 1;
        }
        assigned.push((range, f.scan, f.file));
    }
    Some(KeyRanges {
        split_points,
        files: assigned,
    })
}

/// Where to cut runs of `bytes` into at most `partitions` ranges of about equal bytes: the
/// indices of the runs that start the second and later ranges (empty for one range).
fn balanced_cuts(bytes: &[u64], partitions: usize) -> Vec<usize> {
    let ranges = partitions.min(bytes.len());
    if ranges < 2 {
        return Vec::new();
    }
    let total: u64 = bytes.iter().sum::<u64>().max(1);
    let mut cuts = Vec::with_capacity(ranges - 1);
    let mut before = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        let k = cuts.len() as u64 + 1;
        // Cut before run i once the ranges so far hold their share, or when the runs left
        // are only just enough to give every remaining range one.
        let left = bytes.len() - i;
        let needed = ranges - 1 - cuts.len();
        if i > 0 && needed > 0 && (before * ranges as u64 >= total * k || left == needed) {
            cuts.push(i);
        }
        before += b;
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_cut_into_ranges_of_about_equal_bytes() {
        assert_eq!(balanced_cuts(&[10, 10, 10, 10], 2), [2]);
        assert_eq!(balanced_cuts(&[10, 10, 10, 10], 4), [1, 2, 3]);
        // One big run fills a range by itself.
        assert_eq!(balanced_cuts(&[100, 1, 1, 1], 2), [1]);
        // Fewer runs than partitions: one range per run.
        assert_eq!(balanced_cuts(&[1, 1, 1], 8), [1, 2]);
        // One run (or one partition) is no partitioning at all.
        assert!(balanced_cuts(&[5], 2).is_empty());
        assert!(balanced_cuts(&[5, 5], 1).is_empty());
    }

    #[test]
    fn columns_compared_with_each_other_form_one_group() {
        let c = |scan, column| ScanColumn { scan, column };
        let groups = column_groups(&[(c(1, 0), c(2, 0)), (c(3, 4), c(4, 1)), (c(2, 0), c(5, 2))]);
        assert_eq!(
            groups,
            [vec![c(1, 0), c(2, 0), c(5, 2)], vec![c(3, 4), c(4, 1)]]
        );
    }
}
