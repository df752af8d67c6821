//! TPC-H: the 22 query texts and the eight tables from `tpchgen`, as a [`Suite`] (whose
//! generator, registration and bench all suites share); planning and scheduling stay with
//! [`Session`].
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> anyhow::Result<()> {
//! use ember::prelude::*;
//! let dir = tempfile::tempdir()?;
//! let summary = ember::tpch::generate(0.001, dir.path(), 2)?;
//! assert_eq!(summary.table("nation").map(|t| t.rows), Some(25));
//!
//! let session = Session::local(1).await?;
//! ember::tpch::register(&session, dir.path()).await?;
//! let q6 = ember::tpch::query(6).expect("TPC-H has a query 6");
//! let batches = session.sql(q6).await?.collect().await?;
//! assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
//! # Ok(()) }
//! ```

use std::path::Path;

use arrow::record_batch::RecordBatchReader;
use datafusion::prelude::SessionContext;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

use crate::error::Result;
use crate::session::Session;
use crate::suite::Suite;

pub use crate::suite::{parse_scale_factor, GenSummary, TableSummary, DEFAULT_PARTS};

/// The eight TPC-H tables, each a directory of Parquet files under a data directory.
pub const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// The query texts, with the spec's validation parameters (see `tpch/queries/`).
const QUERIES: &[&str] = &[
    include_str!("../tpch/queries/q1.sql"),
    include_str!("../tpch/queries/q2.sql"),
    include_str!("../tpch/queries/q3.sql"),
    include_str!("../tpch/queries/q4.sql"),
    include_str!("../tpch/queries/q5.sql"),
    include_str!("../tpch/queries/q6.sql"),
    include_str!("../tpch/queries/q7.sql"),
    include_str!("../tpch/queries/q8.sql"),
    include_str!("../tpch/queries/q9.sql"),
    include_str!("../tpch/queries/q10.sql"),
    include_str!("../tpch/queries/q11.sql"),
    include_str!("../tpch/queries/q12.sql"),
    include_str!("../tpch/queries/q13.sql"),
    include_str!("../tpch/queries/q14.sql"),
    include_str!("../tpch/queries/q15.sql"),
    include_str!("../tpch/queries/q16.sql"),
    include_str!("../tpch/queries/q17.sql"),
    include_str!("../tpch/queries/q18.sql"),
    include_str!("../tpch/queries/q19.sql"),
    include_str!("../tpch/queries/q20.sql"),
    include_str!("../tpch/queries/q21.sql"),
    include_str!("../tpch/queries/q22.sql"),
];

/// TPC-H as a benchmark suite: lineitem, orders, partsupp, part and customer are split
/// into files; nation, region and supplier are small at any scale and stay one file.
pub static SUITE: Suite = Suite {
    name: "TPC-H",
    command: "tpch",
    tables: &TABLES,
    split_tables: &["lineitem", "orders", "partsupp", "part", "customer"],
    queries: QUERIES,
    reader: table_reader,
};

/// Part `part` (1-based) of `parts` of a TPC-H table, from `tpchgen`.
fn table_reader(
    table: &str,
    sf: f64,
    part: i32,
    parts: i32,
) -> anyhow::Result<Box<dyn RecordBatchReader>> {
    Ok(match table {
        "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(sf, part, parts))),
        "lineitem" => Box::new(LineItemArrow::new(LineItemGenerator::new(sf, part, parts))),
        "nation" => Box::new(NationArrow::new(NationGenerator::new(sf, part, parts))),
        "orders" => Box::new(OrderArrow::new(OrderGenerator::new(sf, part, parts))),
        "part" => Box::new(PartArrow::new(PartGenerator::new(sf, part, parts))),
        "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(sf, part, parts))),
        "region" => Box::new(RegionArrow::new(RegionGenerator::new(sf, part, parts))),
        "supplier" => Box::new(SupplierArrow::new(SupplierGenerator::new(sf, part, parts))),
        other => anyhow::bail!("TPC-H has no table `{other}`"),
    })
}

/// The SQL of TPC-H query `n` (1 to 22), one statement with the spec's validation
/// parameters; `None` for any other `n`.
///
/// ```
/// let q1 = ember::tpch::query(1).expect("query 1");
/// assert!(q1.contains("l_returnflag"));
/// assert!(ember::tpch::query(0).is_none());
/// assert!(ember::tpch::query(23).is_none());
/// ```
pub fn query(n: usize) -> Option<&'static str> {
    SUITE.query(n)
}

/// Writes the eight tables at scale factor `sf` under `out` (see [`Suite::generate`]).
///
/// # Errors
///
/// As [`Suite::generate`].
pub fn generate(sf: f64, out: &Path, parts: usize) -> anyhow::Result<GenSummary> {
    SUITE.generate(sf, out, parts)
}

/// The tables that `dir` has no directory for; empty for a complete data directory.
pub fn missing_tables(dir: &Path) -> Vec<&'static str> {
    SUITE.missing_tables(dir)
}

/// Registers the eight tables of a data directory written by [`generate`] in `session`.
///
/// # Errors
///
/// As [`Suite::register`].
pub async fn register(session: &Session, dir: &Path) -> Result<()> {
    SUITE.register(session, dir).await
}

/// Registers the same eight tables in a plain DataFusion context.
///
/// # Errors
///
/// As [`Suite::register_datafusion`].
pub async fn register_datafusion(ctx: &SessionContext, dir: &Path) -> Result<()> {
    SUITE.register_datafusion(ctx, dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_is_one_statement_without_a_trailing_semicolon() {
        for n in 1..=22 {
            let text = query(n).expect("query exists");
            assert!(
                text.contains(&format!("TPC-H Q{n} ")),
                "q{n}.sql is not query {n}"
            );
            assert!(
                !text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("--"))
                    .any(|l| l.contains(';')),
                "query {n} has a `;`"
            );
        }
    }
}
