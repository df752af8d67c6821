//! Partition codec: turns a partition into bounded Arrow IPC chunks for the wire and back.
//!
//! The encoder writes one batch at a time, so a large block is never held twice in memory;
//! the decoder is push-based, so batches are rebuilt as chunks arrive.

use std::sync::Arc;

use arrow::array::ArrayData;
use arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use bytes::Bytes;

use crate::error::{EngineError, Result};
use crate::partition::Partition;

/// Largest chunk sent in one gRPC message. 2 MiB keeps messages far below tonic's 4 MiB
/// default decode limit while amortizing per-message overhead.
pub const MAX_CHUNK_BYTES: usize = 2 * 1024 * 1024;

/// Encodes `partition` as an Arrow IPC stream, split into chunks of at most
/// [`MAX_CHUNK_BYTES`]. Chunks are produced lazily, one batch at a time.
pub fn encode_chunks(partition: &Partition) -> impl Iterator<Item = Result<Bytes>> + Send + '_ {
    encode_batches(
        partition.schema().clone(),
        partition.batches().iter().cloned().map(Ok),
    )
}

/// Encodes batches of `schema`, pulled one at a time from `batches` (a spilled block read
/// back from disk, say), as an Arrow IPC stream in chunks of at most [`MAX_CHUNK_BYTES`]:
/// at most one batch is held at once.
pub fn encode_batches<I>(
    schema: SchemaRef,
    batches: I,
) -> impl Iterator<Item = Result<Bytes>> + Send
where
    I: Iterator<Item = Result<RecordBatch>> + Send,
{
    ChunkEncoder {
        schema,
        batches,
        writer: None,
        pending: Bytes::new(),
        finished: false,
    }
}

struct ChunkEncoder<I> {
    schema: SchemaRef,
    batches: I,
    writer: Option<StreamWriter<Vec<u8>>>,
    pending: Bytes,
    finished: bool,
}

impl<I: Iterator<Item = Result<RecordBatch>>> ChunkEncoder<I> {
    /// Encodes the next piece of the stream (schema, one batch, or the end marker) into
    /// `pending`. Returns false once everything was encoded.
    fn fill(&mut self) -> Result<bool> {
        if self.finished {
            return Ok(false);
        }
        let writer = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(StreamWriter::try_new(
                Vec::with_capacity(1024),
                &self.schema,
            )?),
        };
        match self.batches.next() {
            Some(batch) => writer.write(&batch?)?,
            None => {
                writer.finish()?;
                self.finished = true;
            }
        }
        self.pending = Bytes::from(std::mem::take(writer.get_mut()));
        Ok(true)
    }
}

impl<I: Iterator<Item = Result<RecordBatch>>> Iterator for ChunkEncoder<I> {
    type Item = Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.pending.is_empty() {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
        let take = self.pending.len().min(MAX_CHUNK_BYTES);
        Some(Ok(self.pending.split_to(take)))
    }
}

/// `batch` with every buffer rewrapped so that its capacity is its own length.
///
/// A decoded batch's arrays are slices of the one buffer they were read into: a gRPC
/// chunk, a batch's message body, or a whole mapped block file. Arrow reports a slice's
/// memory as the capacity of that whole allocation, and DataFusion's memory accounting
/// charges it once per batch, so every 8,192-row batch of a 500 MB mapped block file
/// claimed 500 MB: sorts and hash joins over fetched blocks ran out of their memory pool
/// on data that fit it many times over. Each rewrapped buffer keeps the allocation alive
/// and reports only its own bytes; nothing is copied.
pub fn exact_buffers(batch: RecordBatch) -> Result<RecordBatch> {
    if !batch.columns().iter().any(|c| overstated(&c.to_data())) {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| arrow::array::make_array(exact_data(c.to_data())))
        .collect();
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &options,
    )?)
}

/// Whether a buffer of `data` (or of its children) reports more than it holds.
fn overstated(data: &ArrayData) -> bool {
    data.buffers().iter().any(|b| b.capacity() > b.len())
        || data
            .nulls()
            .is_some_and(|n| n.buffer().capacity() > n.buffer().len())
        || data.child_data().iter().any(overstated)
}

fn exact_data(data: ArrayData) -> ArrayData {
    let buffers: Vec<Buffer> = data.buffers().iter().map(exact_buffer).collect();
    let children: Vec<ArrayData> = data.child_data().iter().cloned().map(exact_data).collect();
    let nulls = data.nulls().map(|n| {
        let bits = BooleanBuffer::new(exact_buffer(n.buffer()), n.offset(), n.len());
        // SAFETY: the same bits as before, so the same null count.
        unsafe { NullBuffer::new_unchecked(bits, n.null_count()) }
    });
    let builder = data
        .into_builder()
        .buffers(buffers)
        .child_data(children)
        .nulls(nulls);
    // SAFETY: the same bytes, lengths and offsets as the valid array it was built from.
    unsafe { builder.build_unchecked() }
}

fn exact_buffer(buffer: &Buffer) -> Buffer {
    if buffer.capacity() <= buffer.len() {
        return buffer.clone();
    }
    let Some(ptr) = std::ptr::NonNull::new(buffer.as_ptr().cast_mut()) else {
        return buffer.clone();
    };
    // SAFETY: `ptr..ptr + len` lies in `buffer`'s allocation, which the owner (a clone
    // of `buffer`) keeps alive and unchanged for as long as the new buffer exists.
    unsafe { Buffer::from_custom_allocation(ptr, buffer.len(), Arc::new(buffer.clone())) }
}

/// Decodes the chunks [`encode_batches`] produced, in order, handing each batch out as soon
/// as its last byte arrived: a block being fetched is never held whole.
#[derive(Debug, Default)]
pub struct BlockDecoder {
    decoder: StreamDecoder,
    bytes_read: usize,
}

impl BlockDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; the batches it completed are appended to `out`.
    pub fn push(&mut self, chunk: Bytes, out: &mut impl Extend<RecordBatch>) -> Result<()> {
        self.bytes_read += chunk.len();
        let mut buffer = Buffer::from(chunk);
        while !buffer.is_empty() {
            if let Some(batch) = self.decoder.decode(&mut buffer)? {
                out.extend([exact_buffers(batch)?]);
            }
        }
        Ok(())
    }

    /// Bytes fed so far.
    pub fn bytes_read(&self) -> usize {
        self.bytes_read
    }

    /// Checks the stream was complete and returns its schema.
    pub fn finish(mut self) -> Result<SchemaRef> {
        self.decoder.finish()?;
        self.decoder
            .schema()
            .ok_or_else(|| EngineError::Decode("block stream ended before its schema".into()))
    }
}

/// Rebuilds a whole partition from the chunks [`encode_chunks`] produced, in order.
#[derive(Debug, Default)]
pub struct PartitionDecoder {
    decoder: BlockDecoder,
    batches: Vec<RecordBatch>,
}

impl PartitionDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; complete batches are kept.
    pub fn push(&mut self, chunk: Bytes) -> Result<()> {
        self.decoder.push(chunk, &mut self.batches)
    }

    /// Bytes fed so far.
    pub fn bytes_read(&self) -> usize {
        self.decoder.bytes_read()
    }

    /// Checks the stream was complete and returns the partition.
    pub fn finish(self) -> Result<Partition> {
        let schema = self.decoder.finish()?;
        Ok(Partition::new(schema, self.batches))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use proptest::prelude::*;

    use super::*;

    fn partition(batch_rows: &[usize]) -> Partition {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut start = 0i64;
        let batches = batch_rows
            .iter()
            .map(|&n| {
                let ids: Vec<i64> = (start..start + n as i64).collect();
                start += n as i64;
                let names: Vec<Option<String>> = ids
                    .iter()
                    .map(|i| (i % 3 != 0).then(|| format!("row-{i}")))
                    .collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from(ids)),
                        Arc::new(StringArray::from(names)),
                    ],
                )
                .expect("valid test batch")
            })
            .collect();
        Partition::new(schema, batches)
    }

    /// Arrays that are slices of one large allocation report their own bytes after
    /// `exact_buffers`, point at the same memory (nothing copied) and hold the same values.
    #[test]
    fn exact_buffers_count_slices_by_their_own_length_without_copying() {
        use arrow::array::{Array, Int32Array};
        use datafusion::common::utils::memory::get_record_batch_memory_size;
        let big = Buffer::from_vec((0..1_000_000i32).collect::<Vec<_>>());
        let column = |from: usize| -> arrow::array::ArrayRef {
            let values = big.slice_with_length(from * 4, 1_000 * 4);
            Arc::new(Int32Array::new(values.into(), None))
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, false),
            Field::new("b", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(schema, vec![column(0), column(500_000)]).expect("batch");
        assert_eq!(
            get_record_batch_memory_size(&batch),
            4_000_000,
            "counts the allocation"
        );
        let exact = exact_buffers(batch.clone()).expect("rewraps");
        assert_eq!(get_record_batch_memory_size(&exact), 8_000);
        assert_eq!(exact, batch);
        let ptr = |b: &RecordBatch| b.column(1).to_data().buffers()[0].as_ptr();
        assert_eq!(ptr(&exact), ptr(&batch), "the same memory, not a copy");
    }

    fn round_trip(p: &Partition) -> Partition {
        let mut decoder = PartitionDecoder::new();
        for chunk in encode_chunks(p) {
            let chunk = chunk.expect("encode");
            assert!(chunk.len() <= MAX_CHUNK_BYTES);
            decoder.push(chunk).expect("decode");
        }
        decoder.finish().expect("finish")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn decoding_an_encoded_partition_gives_it_back(rows in proptest::collection::vec(0usize..3000, 0..6)) {
            let p = partition(&rows);
            let back = round_trip(&p);
            prop_assert_eq!(back.schema(), p.schema());
            prop_assert_eq!(back.batches(), p.batches());
        }
    }

    #[test]
    fn large_batches_are_split_into_bounded_chunks() {
        let p = partition(&[400_000]);
        let chunks: Vec<Bytes> = encode_chunks(&p).map(|c| c.expect("encode")).collect();
        assert!(
            chunks.len() > 2,
            "expected several chunks, got {}",
            chunks.len()
        );
        assert_eq!(round_trip(&p).num_rows(), 400_000);
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let p = partition(&[10]);
        let mut decoder = PartitionDecoder::new();
        let first = encode_chunks(&p)
            .next()
            .expect("one chunk")
            .expect("encode");
        // Cut the stream in the middle of the first batch's message.
        decoder
            .push(first.slice(..first.len() - 8))
            .expect("a partial message is buffered, not an error");
        assert!(decoder.finish().is_err());
    }
}
