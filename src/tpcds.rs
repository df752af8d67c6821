//! TPC-DS: the 99 query texts and the 24 tables from `tpcdsgen`, as a [`Suite`] (whose
//! generator, registration and bench all suites share); planning and scheduling stay with
//! [`Session`](crate::Session).
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> anyhow::Result<()> {
//! use ember::prelude::*;
//! let dir = tempfile::tempdir()?;
//! let summary = ember::tpcds::SUITE.generate(0.01, dir.path(), 2)?;
//! assert_eq!(summary.table("date_dim").map(|t| t.rows), Some(73_049));
//!
//! let session = Session::local(1).await?;
//! ember::tpcds::SUITE.register(&session, dir.path()).await?;
//! let q96 = ember::tpcds::SUITE.query(96).expect("TPC-DS has a query 96");
//! let batches = session.sql(q96).await?.collect().await?;
//! assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
//! # Ok(()) }
//! ```

use arrow::array::RecordBatchIterator;
use arrow::record_batch::RecordBatchReader;
use tpcdsgen::config::SessionBuilder;
use tpcdsgen::table::Table;
use tpcdsgen_arrow::*;

use crate::suite::Suite;

/// The 24 TPC-DS tables (the generator's `dbgen_version` is left out: no query reads it).
pub const TABLES: [&str; 24] = [
    "call_center",
    "catalog_page",
    "catalog_returns",
    "catalog_sales",
    "customer",
    "customer_address",
    "customer_demographics",
    "date_dim",
    "household_demographics",
    "income_band",
    "inventory",
    "item",
    "promotion",
    "reason",
    "ship_mode",
    "store",
    "store_returns",
    "store_sales",
    "time_dim",
    "warehouse",
    "web_page",
    "web_returns",
    "web_sales",
    "web_site",
];

/// The query texts with the qualification parameters (see `tpcds/queries/`).
const QUERIES: &[&str] = &[
    include_str!("../tpcds/queries/q01.sql"),
    include_str!("../tpcds/queries/q02.sql"),
    include_str!("../tpcds/queries/q03.sql"),
    include_str!("../tpcds/queries/q04.sql"),
    include_str!("../tpcds/queries/q05.sql"),
    include_str!("../tpcds/queries/q06.sql"),
    include_str!("../tpcds/queries/q07.sql"),
    include_str!("../tpcds/queries/q08.sql"),
    include_str!("../tpcds/queries/q09.sql"),
    include_str!("../tpcds/queries/q10.sql"),
    include_str!("../tpcds/queries/q11.sql"),
    include_str!("../tpcds/queries/q12.sql"),
    include_str!("../tpcds/queries/q13.sql"),
    include_str!("../tpcds/queries/q14.sql"),
    include_str!("../tpcds/queries/q15.sql"),
    include_str!("../tpcds/queries/q16.sql"),
    include_str!("../tpcds/queries/q17.sql"),
    include_str!("../tpcds/queries/q18.sql"),
    include_str!("../tpcds/queries/q19.sql"),
    include_str!("../tpcds/queries/q20.sql"),
    include_str!("../tpcds/queries/q21.sql"),
    include_str!("../tpcds/queries/q22.sql"),
    include_str!("../tpcds/queries/q23.sql"),
    include_str!("../tpcds/queries/q24.sql"),
    include_str!("../tpcds/queries/q25.sql"),
    include_str!("../tpcds/queries/q26.sql"),
    include_str!("../tpcds/queries/q27.sql"),
    include_str!("../tpcds/queries/q28.sql"),
    include_str!("../tpcds/queries/q29.sql"),
    include_str!("../tpcds/queries/q30.sql"),
    include_str!("../tpcds/queries/q31.sql"),
    include_str!("../tpcds/queries/q32.sql"),
    include_str!("../tpcds/queries/q33.sql"),
    include_str!("../tpcds/queries/q34.sql"),
    include_str!("../tpcds/queries/q35.sql"),
    include_str!("../tpcds/queries/q36.sql"),
    include_str!("../tpcds/queries/q37.sql"),
    include_str!("../tpcds/queries/q38.sql"),
    include_str!("../tpcds/queries/q39.sql"),
    include_str!("../tpcds/queries/q40.sql"),
    include_str!("../tpcds/queries/q41.sql"),
    include_str!("../tpcds/queries/q42.sql"),
    include_str!("../tpcds/queries/q43.sql"),
    include_str!("../tpcds/queries/q44.sql"),
    include_str!("../tpcds/queries/q45.sql"),
    include_str!("../tpcds/queries/q46.sql"),
    include_str!("../tpcds/queries/q47.sql"),
    include_str!("../tpcds/queries/q48.sql"),
    include_str!("../tpcds/queries/q49.sql"),
    include_str!("../tpcds/queries/q50.sql"),
    include_str!("../tpcds/queries/q51.sql"),
    include_str!("../tpcds/queries/q52.sql"),
    include_str!("../tpcds/queries/q53.sql"),
    include_str!("../tpcds/queries/q54.sql"),
    include_str!("../tpcds/queries/q55.sql"),
    include_str!("../tpcds/queries/q56.sql"),
    include_str!("../tpcds/queries/q57.sql"),
    include_str!("../tpcds/queries/q58.sql"),
    include_str!("../tpcds/queries/q59.sql"),
    include_str!("../tpcds/queries/q60.sql"),
    include_str!("../tpcds/queries/q61.sql"),
    include_str!("../tpcds/queries/q62.sql"),
    include_str!("../tpcds/queries/q63.sql"),
    include_str!("../tpcds/queries/q64.sql"),
    include_str!("../tpcds/queries/q65.sql"),
    include_str!("../tpcds/queries/q66.sql"),
    include_str!("../tpcds/queries/q67.sql"),
    include_str!("../tpcds/queries/q68.sql"),
    include_str!("../tpcds/queries/q69.sql"),
    include_str!("../tpcds/queries/q70.sql"),
    include_str!("../tpcds/queries/q71.sql"),
    include_str!("../tpcds/queries/q72.sql"),
    include_str!("../tpcds/queries/q73.sql"),
    include_str!("../tpcds/queries/q74.sql"),
    include_str!("../tpcds/queries/q75.sql"),
    include_str!("../tpcds/queries/q76.sql"),
    include_str!("../tpcds/queries/q77.sql"),
    include_str!("../tpcds/queries/q78.sql"),
    include_str!("../tpcds/queries/q79.sql"),
    include_str!("../tpcds/queries/q80.sql"),
    include_str!("../tpcds/queries/q81.sql"),
    include_str!("../tpcds/queries/q82.sql"),
    include_str!("../tpcds/queries/q83.sql"),
    include_str!("../tpcds/queries/q84.sql"),
    include_str!("../tpcds/queries/q85.sql"),
    include_str!("../tpcds/queries/q86.sql"),
    include_str!("../tpcds/queries/q87.sql"),
    include_str!("../tpcds/queries/q88.sql"),
    include_str!("../tpcds/queries/q89.sql"),
    include_str!("../tpcds/queries/q90.sql"),
    include_str!("../tpcds/queries/q91.sql"),
    include_str!("../tpcds/queries/q92.sql"),
    include_str!("../tpcds/queries/q93.sql"),
    include_str!("../tpcds/queries/q94.sql"),
    include_str!("../tpcds/queries/q95.sql"),
    include_str!("../tpcds/queries/q96.sql"),
    include_str!("../tpcds/queries/q97.sql"),
    include_str!("../tpcds/queries/q98.sql"),
    include_str!("../tpcds/queries/q99.sql"),
];

/// TPC-DS as a benchmark suite: the fact tables and the large dimensions are split into
/// files (the generator splits a table in chunks of at least a million source rows, so at
/// small scales a later part may be empty).
pub static SUITE: Suite = Suite {
    name: "TPC-DS",
    command: "tpcds",
    tables: &TABLES,
    split_tables: &[
        "store_sales",
        "catalog_sales",
        "web_sales",
        "inventory",
        "store_returns",
        "catalog_returns",
        "web_returns",
        "customer_demographics",
        "customer",
        "customer_address",
    ],
    queries: QUERIES,
    reader: table_reader,
};

/// Part `part` (1-based) of `parts` of a TPC-DS table, from `tpcdsgen`.
fn table_reader(
    table: &str,
    sf: f64,
    part: i32,
    parts: i32,
) -> anyhow::Result<Box<dyn RecordBatchReader>> {
    let session = SessionBuilder::new()
        .with_scale_factor(sf)
        .with_chunk_number(part)
        .with_total_chunks(parts)
        .build()
        .map_err(|e| anyhow::anyhow!("TPC-DS generator at SF {sf}: {e}"))?;
    macro_rules! part_of {
        ($arrow:ident, $table:expr) => {{
            let rows = session.get_source_row_range($table);
            if rows.is_empty() {
                {
                    Box::new(RecordBatchIterator::new(Vec::new(), $arrow::schema_ref()))
                }
            } else {
                {
                    Box::new(
                        $arrow::new(session.clone())
                            .with_source_row_range(*rows.start(), *rows.end()),
                    )
                }
            }
        }};
    }
    Ok(match table {
        "call_center" => part_of!(CallCenterArrow, Table::CallCenter),
        "catalog_page" => part_of!(CatalogPageArrow, Table::CatalogPage),
        "catalog_returns" => part_of!(CatalogReturnsArrow, Table::CatalogReturns),
        "catalog_sales" => part_of!(CatalogSalesArrow, Table::CatalogSales),
        "customer" => part_of!(CustomerArrow, Table::Customer),
        "customer_address" => part_of!(CustomerAddressArrow, Table::CustomerAddress),
        "customer_demographics" => part_of!(CustomerDemographicsArrow, Table::CustomerDemographics),
        "date_dim" => part_of!(DateDimArrow, Table::DateDim),
        "household_demographics" => {
            part_of!(HouseholdDemographicsArrow, Table::HouseholdDemographics)
        }
        "income_band" => part_of!(IncomeBandArrow, Table::IncomeBand),
        "inventory" => part_of!(InventoryArrow, Table::Inventory),
        "item" => part_of!(ItemArrow, Table::Item),
        "promotion" => part_of!(PromotionArrow, Table::Promotion),
        "reason" => part_of!(ReasonArrow, Table::Reason),
        "ship_mode" => part_of!(ShipModeArrow, Table::ShipMode),
        "store" => part_of!(StoreArrow, Table::Store),
        "store_returns" => part_of!(StoreReturnsArrow, Table::StoreReturns),
        "store_sales" => part_of!(StoreSalesArrow, Table::StoreSales),
        "time_dim" => part_of!(TimeDimArrow, Table::TimeDim),
        "warehouse" => part_of!(WarehouseArrow, Table::Warehouse),
        "web_page" => part_of!(WebPageArrow, Table::WebPage),
        "web_returns" => part_of!(WebReturnsArrow, Table::WebReturns),
        "web_sales" => part_of!(WebSalesArrow, Table::WebSales),
        "web_site" => part_of!(WebSiteArrow, Table::WebSite),
        other => anyhow::bail!("TPC-DS has no table `{other}`"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_is_one_statement() {
        assert_eq!(SUITE.queries.len(), 99);
        for n in 1..=99 {
            let text = SUITE.query(n).expect("query exists");
            let statements = text.split(';').filter(|s| !s.trim().is_empty()).count();
            assert_eq!(statements, 1, "q{n:02}.sql");
        }
        assert!(SUITE.query(100).is_none());
    }
}
