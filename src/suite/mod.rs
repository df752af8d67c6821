//! Benchmark suites (TPC-H, TPC-DS): what one is (tables, query texts, a data generator),
//! and what every suite shares: Parquet data directories, registration in Ember and in
//! single-process DataFusion, answer comparison and the `ember <suite> bench` run.
//!
//! - `generate`: writes a suite's tables as directories of Parquet files.
//! - `bench`: times a suite's queries on Ember and on DataFusion and compares the answers.
//! - `compare`: whether two engines' answers to a query agree.

mod bench;
pub mod compare;
mod generate;

use std::path::Path;

use arrow::record_batch::RecordBatchReader;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::error::{Error, Result};
use crate::session::Session;

pub use bench::{bench, BenchArgs};
pub use generate::{GenSummary, TableSummary, DEFAULT_PARTS};

/// Generates part `part` (1-based) of `parts` of one table at a scale factor, as Arrow
/// batches.
pub type TableReader =
    fn(table: &str, sf: f64, part: i32, parts: i32) -> anyhow::Result<Box<dyn RecordBatchReader>>;

/// A benchmark: its tables, its query texts and how its data is generated.
#[derive(Debug)]
pub struct Suite {
    /// As people write it: "TPC-H".
    pub name: &'static str,
    /// The `ember` subcommand and the prefix of default data directories: "tpch".
    pub command: &'static str,
    /// Every table, each a directory of Parquet files under a data directory.
    pub tables: &'static [&'static str],
    /// The tables split into several files, largest first; the others are one file.
    pub split_tables: &'static [&'static str],
    /// The query texts, query 1 first.
    pub queries: &'static [&'static str],
    /// The generator of one file of one table.
    pub reader: TableReader,
}

impl Suite {
    /// The SQL of query `n` (from 1), one statement; `None` for any other `n`.
    pub fn query(&self, n: usize) -> Option<&'static str> {
        n.checked_sub(1).and_then(|i| self.queries.get(i)).copied()
    }

    /// The tables that `dir` has no directory for; empty for a complete data directory (a
    /// table directory exists only once all its files are written).
    pub fn missing_tables(&self, dir: &Path) -> Vec<&'static str> {
        self.tables
            .iter()
            .copied()
            .filter(|t| !dir.join(t).is_dir())
            .collect()
    }

    /// Registers the tables of a data directory in `session`, each `dir/<table>` under its
    /// own name.
    ///
    /// # Errors
    ///
    /// [`Error::Path`] naming the first table directory that is missing, or the planner's
    /// error if a directory holds no readable Parquet.
    pub async fn register(&self, session: &Session, dir: &Path) -> Result<()> {
        for table in self.tables {
            session.register_parquet(table, dir.join(table)).await?;
        }
        Ok(())
    }

    /// Registers the same tables in a plain DataFusion context: the independent engine
    /// Ember's answers and times are compared with.
    ///
    /// # Errors
    ///
    /// [`Error::Path`] for a missing or non-UTF-8 table directory, or DataFusion's error if
    /// one holds no readable Parquet.
    pub async fn register_datafusion(&self, ctx: &SessionContext, dir: &Path) -> Result<()> {
        for table in self.tables {
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
            ctx.register_parquet(*table, text, ParquetReadOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Writes the suite's tables at scale factor `sf` under `out`, each as a directory
    /// `out/<table>/` of Snappy-compressed Parquet files `part-NNNNN.parquet`; the split
    /// tables get `parts` files (fewer where the generator has fewer chunks), the others
    /// one. Files are generated in parallel on all cores.
    ///
    /// Each table is written to `out/<table>.tmp` first and renamed into place only when
    /// every table is complete, so an interrupted or failed run leaves no half table; an
    /// existing table directory is replaced.
    ///
    /// # Errors
    ///
    /// If `sf` is not a finite number above zero, `parts` is zero or too large, or a
    /// directory or file under `out` cannot be created or written (the error names the
    /// path).
    pub fn generate(&self, sf: f64, out: &Path, parts: usize) -> anyhow::Result<GenSummary> {
        generate::generate(self, sf, out, parts)
    }
}

/// Parses a scale factor for the command line: a finite number above zero.
///
/// ```
/// assert_eq!(ember::suite::parse_scale_factor("0.01"), Ok(0.01));
/// assert!(ember::suite::parse_scale_factor("-1").is_err());
/// assert!(ember::suite::parse_scale_factor("many").is_err());
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
