//! Partition codec: turns a partition into bounded Arrow IPC chunks for the wire and back.
//!
//! The encoder writes one batch at a time, so a large block is never held twice in memory;
//! the decoder is push-based, so batches are rebuilt as chunks arrive.

use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::error::{EngineError, Result};
use crate::partition::Partition;

/// Largest chunk sent in one gRPC message. 2 MiB keeps messages far below tonic's 4 MiB
/// default decode limit while amortizing per-message overhead.
pub const MAX_CHUNK_BYTES: usize = 2 * 1024 * 1024;

/// Encodes `partition` as an Arrow IPC stream, split into chunks of at most
/// [`MAX_CHUNK_BYTES`]. Chunks are produced lazily, one batch at a time.
pub fn encode_chunks(partition: &Partition) -> impl Iterator<Item = Result<Bytes>> + Send + '_ {
    ChunkEncoder {
        partition,
        next_batch: 0,
        writer: None,
        pending: Bytes::new(),
        finished: false,
    }
}

struct ChunkEncoder<'a> {
    partition: &'a Partition,
    next_batch: usize,
    writer: Option<StreamWriter<Vec<u8>>>,
    pending: Bytes,
    finished: bool,
}

impl ChunkEncoder<'_> {
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
                self.partition.schema(),
            )?),
        };
        match self.partition.batches().get(self.next_batch) {
            Some(batch) => {
                writer.write(batch)?;
                self.next_batch += 1;
            }
            None => {
                writer.finish()?;
                self.finished = true;
            }
        }
        self.pending = Bytes::from(std::mem::take(writer.get_mut()));
        Ok(true)
    }
}

impl Iterator for ChunkEncoder<'_> {
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

/// Rebuilds a partition from the chunks [`encode_chunks`] produced, in order.
#[derive(Debug, Default)]
pub struct PartitionDecoder {
    decoder: StreamDecoder,
    batches: Vec<RecordBatch>,
    bytes_read: usize,
}

impl PartitionDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; complete batches are kept.
    pub fn push(&mut self, chunk: Bytes) -> Result<()> {
        self.bytes_read += chunk.len();
        let mut buffer = Buffer::from(chunk);
        while !buffer.is_empty() {
            if let Some(batch) = self.decoder.decode(&mut buffer)? {
                self.batches.push(batch);
            }
        }
        Ok(())
    }

    /// Bytes fed so far.
    pub fn bytes_read(&self) -> usize {
        self.bytes_read
    }

    /// Checks the stream was complete and returns the partition.
    pub fn finish(mut self) -> Result<Partition> {
        self.decoder.finish()?;
        let schema: SchemaRef = match self.decoder.schema() {
            Some(s) => s,
            None => {
                return Err(EngineError::Decode(
                    "block stream ended before its schema".into(),
                ))
            }
        };
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
