//! On-disk format of saved stages and models.
//!
//! A saved stage is a directory:
//!
//! - `metadata.json`: `{"class": ..., "ember_version": ..., "params": {...}}`: the stage's
//!   class, the Ember version that wrote it, and its parameters and small fitted values
//!   (labels of a string indexer, sizes);
//! - `data.arrow` (when the stage has numeric arrays): an Arrow IPC file with one row per
//!   array, columns `name` (Utf8) and `values` (List<Float64>), so coefficients keep every
//!   bit of their `f64` values;
//! - `stages/NNN/` for each stage of a pipeline model, and `input_schema.arrow` (an Arrow
//!   IPC file of no rows) with the columns the pipeline was fitted on.
//!
//! A stage is written into a staging directory next to `path` and renamed into place, so a
//! failed save leaves nothing half-written; saving over an existing path is an error.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Builder, ListBuilder, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{MlError, Result};
use crate::pipeline::Transformer;

/// The contents of `metadata.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    /// The stage's class.
    pub class: String,
    /// The Ember version that wrote it.
    pub ember_version: String,
    /// Parameters and small fitted values.
    pub params: serde_json::Value,
}

/// Writes a stage: metadata, arrays, and whatever `extra` writes into the staging
/// directory; then renames the staging directory to `path`.
///
/// # Errors
///
/// `path` exists, or writing failed (nothing is left at `path` then).
pub fn save_stage(
    path: &Path,
    class: &str,
    params: serde_json::Value,
    arrays: &[(&str, &[f64])],
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if path.exists() {
        return Err(MlError::Format {
            path: path.to_path_buf(),
            message: "already exists; remove it or save elsewhere".into(),
        });
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| MlError::io(parent, e))?;
    let staging = parent.join(format!(
        ".{}.saving-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let result = (|| {
        std::fs::create_dir_all(&staging).map_err(|e| MlError::io(&staging, e))?;
        let meta = Metadata {
            class: class.to_string(),
            ember_version: env!("CARGO_PKG_VERSION").to_string(),
            params,
        };
        let file = staging.join("metadata.json");
        let text = serde_json::to_string_pretty(&meta).map_err(|e| MlError::Format {
            path: file.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&file, text).map_err(|e| MlError::io(&file, e))?;
        if !arrays.is_empty() {
            write_arrays(&staging.join("data.arrow"), arrays)?;
        }
        extra(&staging)?;
        std::fs::rename(&staging, path).map_err(|e| MlError::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Writes `schema` as an Arrow IPC file of no rows.
///
/// # Errors
///
/// Writing failed.
pub fn write_schema(file: &Path, schema: &Schema) -> Result<()> {
    let out = File::create(file).map_err(|e| MlError::io(file, e))?;
    let mut writer = FileWriter::try_new(out, schema)?;
    writer.finish()?;
    Ok(())
}

/// Reads a schema written by [`write_schema`].
///
/// # Errors
///
/// The file is missing or not an Arrow IPC file.
pub fn read_schema(file: &Path) -> Result<arrow::datatypes::SchemaRef> {
    let reader = FileReader::try_new(File::open(file).map_err(|e| MlError::io(file, e))?, None)
        .map_err(|e| format_error(file, e))?;
    Ok(reader.schema())
}

fn write_arrays(file: &Path, arrays: &[(&str, &[f64])]) -> Result<()> {
    let names = StringArray::from_iter_values(arrays.iter().map(|(n, _)| *n));
    let mut values = ListBuilder::new(Float64Builder::new());
    for (_, v) in arrays {
        values.values().append_slice(v);
        values.append(true);
    }
    let values = values.finish();
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("values", values.data_type().clone(), false),
    ]));
    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(names), Arc::new(values)])?;
    let out = File::create(file).map_err(|e| MlError::io(file, e))?;
    let mut writer = FileWriter::try_new(out, &schema)?;
    writer.write(&batch)?;
    writer.finish()?;
    Ok(())
}

/// Saves a stage whose whole state is its serde form (parameters and fitted values).
///
/// # Errors
///
/// As [`save_stage`].
pub fn save_json<T: Serialize>(path: &Path, class: &str, stage: &T) -> Result<()> {
    let value = serde_json::to_value(stage).map_err(|e| MlError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    save_stage(
        path,
        class,
        serde_json::json!({ "stage": value }),
        &[],
        |_| Ok(()),
    )
}

/// Reads a stage saved by [`save_json`] as `class`.
///
/// # Errors
///
/// The directory is missing, malformed or holds another class.
pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path, class: &str) -> Result<T> {
    let meta = read_metadata(path)?;
    check_class(path, &meta.class, &[class])?;
    param(&meta, path, "stage")
}

/// Fails unless saved class `found` is one of `expected`.
///
/// # Errors
///
/// It is not.
pub fn check_class(path: &Path, found: &str, expected: &[&str]) -> Result<()> {
    if expected.contains(&found) {
        Ok(())
    } else {
        Err(MlError::Format {
            path: path.to_path_buf(),
            message: format!("holds a {found}, not a {}", expected.join(" or ")),
        })
    }
}

/// Reads `metadata.json` of a saved stage.
///
/// # Errors
///
/// The directory or file is missing or malformed.
pub fn read_metadata(path: &Path) -> Result<Metadata> {
    let file = path.join("metadata.json");
    let text = std::fs::read_to_string(&file).map_err(|e| MlError::io(&file, e))?;
    serde_json::from_str(&text).map_err(|e| MlError::Format {
        path: file,
        message: format!("not a saved Ember stage: {e}"),
    })
}

/// Reads the arrays of a saved stage.
///
/// # Errors
///
/// The file is missing or malformed.
pub fn read_arrays(path: &Path) -> Result<HashMap<String, Vec<f64>>> {
    let file = path.join("data.arrow");
    let reader = FileReader::try_new(File::open(&file).map_err(|e| MlError::io(&file, e))?, None)
        .map_err(|e| format_error(&file, e))?;
    let mut out = HashMap::new();
    for batch in reader {
        let batch = batch.map_err(|e| format_error(&file, e))?;
        let names = batch
            .column(0)
            .as_string_opt::<i32>()
            .ok_or_else(|| format_error(&file, "column 0 is not Utf8"))?;
        let lists = batch
            .column(1)
            .as_list_opt::<i32>()
            .ok_or_else(|| format_error(&file, "column 1 is not a list"))?;
        for i in 0..batch.num_rows() {
            let values = lists.value(i);
            let values = values
                .as_primitive_opt::<arrow::datatypes::Float64Type>()
                .ok_or_else(|| format_error(&file, "values are not Float64"))?;
            out.insert(names.value(i).to_string(), values.values().to_vec());
        }
    }
    Ok(out)
}

fn format_error(path: &Path, e: impl std::fmt::Display) -> MlError {
    MlError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Array `name` of a saved stage's arrays.
///
/// # Errors
///
/// It is missing.
pub fn array(arrays: &HashMap<String, Vec<f64>>, path: &Path, name: &str) -> Result<Vec<f64>> {
    arrays.get(name).cloned().ok_or_else(|| MlError::Format {
        path: path.join("data.arrow"),
        message: format!("lacks array '{name}'"),
    })
}

/// Parameter `name` of saved metadata, deserialized.
///
/// # Errors
///
/// It is missing or has the wrong type.
pub fn param<T: serde::de::DeserializeOwned>(
    meta: &Metadata,
    path: &Path,
    name: &str,
) -> Result<T> {
    let value = meta
        .params
        .get(name)
        .cloned()
        .ok_or_else(|| MlError::Format {
            path: path.join("metadata.json"),
            message: format!("lacks parameter '{name}'"),
        })?;
    serde_json::from_value(value).map_err(|e| MlError::Format {
        path: path.join("metadata.json"),
        message: format!("parameter '{name}': {e}"),
    })
}

/// Reads any saved stage, dispatching on its class.
///
/// # Errors
///
/// The directory is missing, malformed, or holds an unknown class.
pub fn load_transformer(path: &Path) -> Result<Box<dyn Transformer>> {
    let meta = read_metadata(path)?;
    let stage: Box<dyn Transformer> = match meta.class.as_str() {
        "PipelineModel" => Box::new(crate::pipeline::PipelineModel::load(path)?),
        "VectorAssembler" => Box::new(crate::feature::VectorAssembler::load(path)?),
        "StandardScalerModel" | "MinMaxScalerModel" => {
            Box::new(crate::feature::ScalerModel::load(path)?)
        }
        "StringIndexerModel" => Box::new(crate::feature::StringIndexerModel::load(path)?),
        "OneHotEncoderModel" => Box::new(crate::feature::OneHotEncoderModel::load(path)?),
        "ImputerModel" => Box::new(crate::feature::ImputerModel::load(path)?),
        "LogisticRegressionModel" => {
            Box::new(crate::classification::LogisticRegressionModel::load(path)?)
        }
        "LinearRegressionModel" => Box::new(crate::regression::LinearRegressionModel::load(path)?),
        "KMeansModel" => Box::new(crate::clustering::KMeansModel::load(path)?),
        other => {
            return Err(MlError::Format {
                path: PathBuf::from(path),
                message: format!("unknown stage class '{other}'"),
            })
        }
    };
    Ok(stage)
}
