//! TPC-H: the 22 query texts, a Parquet generator for the eight tables, their registration
//! in a session, and a benchmark against single-process DataFusion; planning and scheduling
//! stay with [`Session`].
//!
//! - `generate`: writes the tables with `tpchgen` as directories of Parquet files.
//! - `bench`: `ember tpch bench`, times the queries on Ember and on DataFusion.
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

mod bench;
mod generate;

use std::path::Path;

use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::error::{Error, Result};
use crate::session::Session;

pub use bench::{bench, BenchArgs};
pub use generate::{generate, missing_tables, GenSummary, TableSummary, DEFAULT_PARTS};

/// The eight TPC-H tables, each a directory of Parquet files under a data directory.
pub const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// The query texts, with the spec's validation parameters (see `tpch/queries/`).
const QUERIES: [&str; 22] = [
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
    n.checked_sub(1).and_then(|i| QUERIES.get(i)).copied()
}

/// Registers the eight tables of a data directory written by [`generate`] in `session`,
/// each table `dir/<table>` under its own name.
///
/// # Errors
///
/// [`Error::Path`] naming the first table directory that is missing, or the planner's error
/// if a directory holds no readable Parquet.
pub async fn register(session: &Session, dir: &Path) -> Result<()> {
    for table in TABLES {
        session.register_parquet(table, dir.join(table)).await?;
    }
    Ok(())
}

/// Registers the same eight tables in a plain DataFusion context: the independent engine
/// Ember's answers and times are compared with.
///
/// # Errors
///
/// [`Error::Path`] for a missing or non-UTF-8 table directory, or DataFusion's error if one
/// holds no readable Parquet.
pub async fn register_datafusion(ctx: &SessionContext, dir: &Path) -> Result<()> {
    for table in TABLES {
        let path = dir.join(table);
        if !path.is_dir() {
            return Err(Error::Path {
                path,
                message: "no such table directory".into(),
            });
        }
        let Some(text) = path.to_str() else {
            return Err(Error::Path {
                path,
                message: "path is not UTF-8".into(),
            });
        };
        ctx.register_parquet(table, text, ParquetReadOptions::default())
            .await?;
    }
    Ok(())
}

/// Parses a scale factor for the command line: a finite number above zero.
///
/// ```
/// assert_eq!(ember::tpch::parse_scale_factor("0.01"), Ok(0.01));
/// assert!(ember::tpch::parse_scale_factor("-1").is_err());
/// assert!(ember::tpch::parse_scale_factor("many").is_err());
/// ```
pub fn parse_scale_factor(text: &str) -> std::result::Result<f64, String> {
    let sf: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number (try 1 or 0.01)"))?;
    if !(sf.is_finite() && sf > 0.0) {
        return Err(format!(
            "scale factor {text} is not above zero (try 1 or 0.01)"
        ));
    }
    Ok(sf)
}

/// Parses a file count per big table for the command line: a whole number from 1.
pub(crate) fn parse_parts(text: &str) -> std::result::Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 && i32::try_from(n).is_ok() => Ok(n),
        _ => Err(format!(
            "`{text}` is not a file count (a whole number from 1)"
        )),
    }
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
