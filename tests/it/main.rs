//! Ember's integration tests, linked into one binary (each file is a module; one link of
//! DataFusion and Ember instead of one per file). Run one file's tests with
//! `cargo test --test it <module>::`, e.g. `cargo test --test it shuffle::`.

mod common;

mod bad_input;
mod browser;
mod cli;
mod cluster;
mod deploy;
mod gpu;
mod join_filters;
mod key_ranges;
mod memory;
mod ml;
mod multihost;
mod pyspark;
mod scheduler;
mod security;
mod serve;
mod shell;
mod shuffle;
mod subqueries;
mod tpcds;
mod tpch;
mod ui;
