//! Partition: a schema plus the record batches of one block; shared by reference, never copied.

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

/// The materialized contents of one block.
///
/// Blocks are held as `Arc<Partition>` by the block manager and by every reader at once;
/// cloning the batches out of it only bumps reference counts.
#[derive(Debug, Clone)]
pub struct Partition {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

impl Partition {
    /// A partition of `batches`, all of which must have `schema`.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Self {
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        Self {
            schema,
            batches,
            rows,
            bytes,
        }
    }

    /// The schema of every batch.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The record batches, in order.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Total number of rows.
    pub fn num_rows(&self) -> usize {
        self.rows
    }

    /// Memory held by the batches' buffers: what the block manager accounts for.
    pub fn memory_size(&self) -> usize {
        self.bytes
    }
}
