//! Same-host block files: a block written once as an Arrow IPC file into a directory that
//! the processes of one application on one host share, and read back by memory-mapping
//! the file, its arrays pointing into the mapping (no copy, no decode of the data).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::convert::fb_to_schema;
use arrow::ipc::reader::{read_footer_length, FileDecoder};
use arrow::ipc::root_as_footer;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;

use crate::error::{EngineError, Result};

/// Suffix of a block file still being written; it is renamed once complete, so a reader
/// only ever finds whole files.
const PARTIAL_SUFFIX: &str = ".partial";

/// Bytes gathered before each write to a block file: the IPC writer hands over every
/// buffer of every array separately, most of them small.
const WRITE_BUFFER: usize = 1 << 20;

/// Writes `batches` of `schema` as the Arrow IPC file `dir/name`: first under a temporary
/// name, then renamed, so the file appears complete or not at all. Returns its path and
/// size in bytes.
///
/// # Errors
///
/// An I/O error (a full tmpfs, say); nothing is left behind then.
pub fn write_block_file<'a>(
    dir: &Path,
    name: &str,
    schema: &SchemaRef,
    batches: impl IntoIterator<Item = &'a RecordBatch>,
) -> Result<(PathBuf, usize)> {
    let path = dir.join(name);
    let partial = dir.join(format!("{name}{PARTIAL_SUFFIX}"));
    let written = (|| -> std::io::Result<usize> {
        let file = File::create(&partial)?;
        let mut writer = FileWriter::try_new(BufWriter::with_capacity(WRITE_BUFFER, file), schema)
            .map_err(std::io::Error::other)?;
        for batch in batches {
            writer.write(batch).map_err(std::io::Error::other)?;
        }
        writer.finish().map_err(std::io::Error::other)?;
        let mut out = writer.into_inner().map_err(std::io::Error::other)?;
        out.flush()?;
        let bytes = out.get_ref().metadata()?.len() as usize;
        drop(out);
        std::fs::rename(&partial, &path)?;
        Ok(bytes)
    })();
    match written {
        Ok(bytes) => Ok((path, bytes)),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(EngineError::io(path, e))
        }
    }
}

/// Reads the Arrow IPC file at `path` by mapping it into memory: the batches' buffers are
/// slices of the mapping, which stays alive as long as any of them does (also after the
/// file is removed, as the owner of a block does when the block goes).
///
/// The arrays are not validated again (offsets, UTF-8): that would cost the reader about as
/// much as the copy mapping avoids.
///
/// # Safety
///
/// `path` must be a file [`write_block_file`] wrote (from valid arrays) that nothing has
/// changed since: Ember's own block files, in a directory only its user can write to. A
/// crafted file could make the arrays read out of bounds.
///
/// # Errors
///
/// The file is missing (its block was removed) or is not a complete Arrow IPC file.
pub unsafe fn map_block_file(path: &Path) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let io = |e: std::io::Error| EngineError::io(path, e);
    let file = File::open(path).map_err(io)?;
    // SAFETY: block files are written whole under another name and renamed into place;
    // nothing writes to or truncates a file once it has its name, its owner only unlinks
    // it, which leaves an existing mapping intact.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(io)?;
    let buffer = Buffer::from(bytes::Bytes::from_owner(map));
    // SAFETY: the caller vouches for the file (see above).
    unsafe { decode_file(&buffer) }.map_err(|e| {
        EngineError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        )
    })
}

/// The schema and batches of a whole Arrow IPC file held in `buffer`.
///
/// # Safety
///
/// As for [`map_block_file`]: the file's arrays are trusted to be valid.
unsafe fn decode_file(
    buffer: &Buffer,
) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), arrow::error::ArrowError> {
    use arrow::error::ArrowError;
    let trailer_start = buffer
        .len()
        .checked_sub(10)
        .ok_or_else(|| ArrowError::IpcError("file too short for an Arrow footer".into()))?;
    let trailer: [u8; 10] = buffer[trailer_start..]
        .try_into()
        .map_err(|_| ArrowError::IpcError("short trailer".into()))?;
    let footer_len = read_footer_length(trailer)?;
    let footer_start = trailer_start
        .checked_sub(footer_len)
        .ok_or_else(|| ArrowError::IpcError("footer longer than the file".into()))?;
    let footer = root_as_footer(&buffer[footer_start..trailer_start])
        .map_err(|e| ArrowError::IpcError(format!("bad footer: {e}")))?;
    let schema = std::sync::Arc::new(fb_to_schema(
        footer
            .schema()
            .ok_or_else(|| ArrowError::IpcError("footer without a schema".into()))?,
    ));
    // SAFETY: the caller vouches that the file holds valid arrays (see map_block_file).
    let decoder = FileDecoder::new(std::sync::Arc::clone(&schema), footer.version());
    let mut decoder = unsafe { decoder.with_skip_validation(true) };
    let slice = |block: &arrow::ipc::Block| {
        let len = block.bodyLength() as usize + block.metaDataLength() as usize;
        let start = block.offset() as usize;
        if start.checked_add(len).is_none_or(|end| end > buffer.len()) {
            return Err(ArrowError::IpcError(
                "block beyond the end of the file".into(),
            ));
        }
        Ok(buffer.slice_with_length(start, len))
    };
    for block in footer.dictionaries().iter().flatten() {
        decoder.read_dictionary(block, &slice(block)?)?;
    }
    let mut batches = Vec::new();
    for block in footer.recordBatches().iter().flatten() {
        if let Some(batch) = decoder.read_record_batch(block, &slice(block)?)? {
            // Each array is a slice of the whole mapped file; counted as such, every batch
            // would claim the file's size.
            batches.push(
                crate::codec::exact_buffers(batch)
                    .map_err(|e| ArrowError::IpcError(e.to_string()))?,
            );
        }
    }
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn batch(from: i64, rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + rows)),
                Arc::new(StringArray::from_iter(
                    (from..from + rows).map(|i| (i % 3 != 0).then(|| format!("row {i}"))),
                )),
            ],
        )
        .expect("batch")
    }

    /// Batches come back equal, their buffers inside the mapping (not copied), and stay
    /// readable after the file is removed.
    #[test]
    fn a_block_file_maps_back_without_copying_and_outlives_its_removal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batches = vec![batch(0, 1000), batch(1000, 10)];
        let (path, bytes) =
            write_block_file(dir.path(), "b1", &batches[0].schema(), &batches).expect("write");
        assert_eq!(bytes as u64, std::fs::metadata(&path).expect("stat").len());
        let (schema, back) = unsafe { map_block_file(&path) }.expect("map");
        assert_eq!(schema, batches[0].schema());
        assert_eq!(back, batches);
        std::fs::remove_file(&path).expect("remove");
        let values = back[0].column(0).as_primitive::<Int64Type>();
        assert_eq!(values.value(999), 999);
        assert_eq!(back[1].column(1).as_string::<i32>().value(1), "row 1001");
        // The values buffer of the first batch lies within one mapping shared by all.
        let first = back[0].column(0).to_data().buffers()[0].as_ptr() as usize;
        let second = back[1].column(0).to_data().buffers()[0].as_ptr() as usize;
        assert!(second > first && second - first < bytes, "one mapping");
        assert_eq!(back[0].column(1).null_count(), 334);
    }

    /// A mapped batch reports the memory of its own arrays, not of the whole file (which is
    /// what DataFusion's pools would charge for it otherwise).
    #[test]
    fn a_mapped_batch_counts_its_own_bytes_not_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let batches: Vec<RecordBatch> = (0..50).map(|i| batch(i * 1000, 1000)).collect();
        let (path, bytes) =
            write_block_file(dir.path(), "b2", &batches[0].schema(), &batches).expect("write");
        let (_, back) = unsafe { map_block_file(&path) }.expect("map");
        let original = datafusion::common::utils::memory::get_record_batch_memory_size(&batches[7]);
        let mapped = datafusion::common::utils::memory::get_record_batch_memory_size(&back[7]);
        assert!(
            bytes > 20 * original,
            "the file is much bigger than a batch"
        );
        assert!(
            mapped <= original * 2,
            "a mapped batch counts {mapped} bytes, its original {original}"
        );
        assert_eq!(back, batches);
    }

    /// A file that is not a complete block file is an error naming it, not a panic; a
    /// failed write leaves nothing behind.
    #[test]
    fn broken_and_missing_files_are_errors_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broken = dir.path().join("broken");
        std::fs::write(&broken, b"not an arrow file at all").expect("write");
        // SAFETY: a file that is not Arrow IPC at all fails at its trailer, before any array.
        let e = unsafe { map_block_file(&broken) }
            .expect_err("broken")
            .to_string();
        assert!(e.contains("broken"), "{e}");
        let e = unsafe { map_block_file(&dir.path().join("gone")) }
            .expect_err("missing")
            .to_string();
        assert!(e.contains("gone"), "{e}");
        let missing_dir = dir.path().join("no-such-dir");
        let b = batch(0, 3);
        assert!(write_block_file(&missing_dir, "x", &b.schema(), [&b]).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
