//! Data generation: writes a suite's tables with its generator as directories of Parquet
//! files, each table whole or not at all; knows nothing of sessions or queries.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use arrow::record_batch::RecordBatchReader;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::Suite;

/// Files per big table when the caller does not say: fixed rather than the machine's
/// cores, so a data directory means the same thing on every machine, and enough that a
/// scan of a big table has several partitions.
pub const DEFAULT_PARTS: usize = 8;

/// Rows per Parquet row group: a few per file at SF 1, so a scan can split a file.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// What [`Suite::generate`] wrote for one table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSummary {
    /// The table's name, one of the suite's tables.
    pub name: &'static str,
    /// Parquet files in its directory.
    pub files: usize,
    /// Rows in all its files.
    pub rows: u64,
    /// Bytes of all its files.
    pub bytes: u64,
}

/// What [`Suite::generate`] wrote: one entry per table, in the suite's order.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSummary {
    /// The scale factor.
    pub scale_factor: f64,
    /// The data directory (holding one directory per table).
    pub dir: PathBuf,
    /// The tables written.
    pub tables: Vec<TableSummary>,
    /// Wall time of the whole generation.
    pub elapsed: Duration,
}

impl GenSummary {
    /// The summary of table `name`, if it was written.
    pub fn table(&self, name: &str) -> Option<&TableSummary> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Rows in all tables.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Bytes in all tables.
    pub fn bytes(&self) -> u64 {
        self.tables.iter().map(|t| t.bytes).sum()
    }
}

impl fmt::Display for GenSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<22} {:>6} {:>12} {:>12}",
            "table", "files", "rows", "MB"
        )?;
        for t in &self.tables {
            writeln!(
                f,
                "{:<22} {:>6} {:>12} {:>12.2}",
                t.name,
                t.files,
                t.rows,
                megabytes(t.bytes)
            )?;
        }
        writeln!(
            f,
            "wrote {} tables ({} rows, {:.2} MB) at SF {} to {} in {:.3} s",
            self.tables.len(),
            self.rows(),
            megabytes(self.bytes()),
            self.scale_factor,
            self.dir.display(),
            self.elapsed.as_secs_f64()
        )
    }
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// One Parquet file to write.
#[derive(Debug)]
struct FileJob {
    table: &'static str,
    /// 1-based, as the generators count parts.
    part: i32,
    parts: i32,
    path: PathBuf,
}

/// The files one writer thread wrote, by job index, or `Err` if the thread panicked.
type WorkerOutcome = std::thread::Result<Vec<(usize, anyhow::Result<FileStats>)>>;

/// Rows and bytes of one written file.
#[derive(Debug, Clone, Copy, Default)]
struct FileStats {
    rows: u64,
    bytes: u64,
}

/// See [`Suite::generate`].
pub(super) fn generate(
    suite: &Suite,
    sf: f64,
    out: &Path,
    parts: usize,
) -> anyhow::Result<GenSummary> {
    if !(sf.is_finite() && sf > 0.0) {
        bail!("scale factor {sf} is not above zero (try 1 or 0.01)");
    }
    let parts_i32 = i32::try_from(parts)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| anyhow!("parts must be between 1 and {}, not {parts}", i32::MAX))?;
    let started = Instant::now();
    fs::create_dir_all(out)
        .with_context(|| format!("creating output directory {}", out.display()))?;

    let mut jobs = Vec::new();
    let split = suite.split_tables;
    for &table in split
        .iter()
        .chain(suite.tables.iter().filter(|t| !split.contains(t)))
    {
        let count = if split.contains(&table) { parts_i32 } else { 1 };
        let tmp = staging_dir(out, table);
        remove_dir_if_present(&tmp)?;
        fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        for part in 1..=count {
            jobs.push(FileJob {
                table,
                part,
                parts: count,
                path: tmp.join(format!("part-{:05}.parquet", part - 1)),
            });
        }
    }

    let stats = match write_files(suite, sf, &jobs) {
        Ok(stats) => stats,
        Err(e) => {
            for table in suite.tables {
                // Best effort: the error being returned matters more than a leftover
                // staging directory, which the next run removes anyway.
                let _ = fs::remove_dir_all(staging_dir(out, table));
            }
            return Err(e);
        }
    };

    let mut tables = Vec::with_capacity(suite.tables.len());
    for &table in suite.tables {
        let mut summary = TableSummary {
            name: table,
            files: 0,
            rows: 0,
            bytes: 0,
        };
        for (job, s) in jobs.iter().zip(&stats).filter(|(j, _)| j.table == table) {
            debug_assert_eq!(job.table, table);
            summary.files += 1;
            summary.rows += s.rows;
            summary.bytes += s.bytes;
        }
        let tmp = staging_dir(out, table);
        let dest = out.join(table);
        remove_dir_if_present(&dest)?;
        fs::rename(&tmp, &dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
        tables.push(summary);
    }
    Ok(GenSummary {
        scale_factor: sf,
        dir: out.to_path_buf(),
        tables,
        elapsed: started.elapsed(),
    })
}

fn staging_dir(out: &Path, table: &str) -> PathBuf {
    out.join(format!("{table}.tmp"))
}

fn remove_dir_if_present(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Writes every job's file on a pool of scoped threads (one per core), stopping early after
/// the first failure. Returns the stats in job order.
fn write_files(suite: &Suite, sf: f64, jobs: &[FileJob]) -> anyhow::Result<Vec<FileStats>> {
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, jobs.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let outcomes: Vec<WorkerOutcome> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let result = write_file(suite, sf, job);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        done.push((i, result));
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join()).collect()
    });
    let mut stats = vec![None; jobs.len()];
    for outcome in outcomes {
        let done = outcome.map_err(|_| anyhow!("a {} generator thread panicked", suite.name))?;
        for (i, result) in done {
            stats[i] = Some(result?);
        }
    }
    stats
        .into_iter()
        .zip(jobs)
        .map(|(s, job)| s.ok_or_else(|| anyhow!("{} was not written (a bug)", job.path.display())))
        .collect()
}

/// Generates one part of one table and writes it as a Parquet file.
fn write_file(suite: &Suite, sf: f64, job: &FileJob) -> anyhow::Result<FileStats> {
    let batches = (suite.reader)(job.table, sf, job.part, job.parts)
        .with_context(|| format!("generating {}", job.table))?;
    write_parquet(batches, &job.path)
        .with_context(|| format!("writing {} of {}", job.path.display(), job.table))
}

fn write_parquet(batches: Box<dyn RecordBatchReader>, path: &Path) -> anyhow::Result<FileStats> {
    let file = fs::File::create(path).context("creating the file")?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(file, batches.schema(), Some(properties))?;
    let mut rows = 0u64;
    for batch in batches {
        let batch = batch.context("generating rows")?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.close()?;
    let bytes = fs::metadata(path)?.len();
    Ok(FileStats { rows, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tpch::{generate, missing_tables};

    #[test]
    fn bad_scale_factor_or_parts_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("data");
        for sf in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = generate(sf, &out, 2).expect_err("bad sf");
            assert!(e.to_string().contains("scale factor"), "{e}");
        }
        let e = generate(0.001, &out, 0).expect_err("zero parts");
        assert!(e.to_string().contains("parts"), "{e}");
        assert!(!out.exists());
    }

    #[test]
    fn tables_are_split_into_parts_and_a_rerun_replaces_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let summary = generate(0.001, dir.path(), 3).expect("generates");
        assert!(missing_tables(dir.path()).is_empty());
        let files = |t: &str| summary.table(t).expect("table").files;
        assert_eq!(files("lineitem"), 3);
        assert_eq!(files("customer"), 3);
        assert_eq!(files("nation"), 1);
        assert_eq!(summary.table("region").expect("region").rows, 5);
        assert_eq!(summary.table("orders").expect("orders").rows, 1_500);

        let again = generate(0.001, dir.path(), 2).expect("regenerates");
        assert_eq!(again.table("lineitem").expect("lineitem").files, 2);
        let on_disk = fs::read_dir(dir.path().join("lineitem"))
            .expect("dir")
            .count();
        assert_eq!(on_disk, 2, "the old table's files are gone");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(again.rows(), summary.rows());
    }
}
