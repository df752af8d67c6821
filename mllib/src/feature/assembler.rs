//! VectorAssembler: numeric and vector columns into one feature vector column.

#[allow(unused_imports)]
use super::*;

/// Combines numeric and vector columns into one feature vector column
/// (`FixedSizeList<Float32>`), in the order given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VectorAssembler {
    /// Columns to combine (numeric or vector).
    pub input_cols: Vec<String>,
    /// The vector column made (default `features`).
    pub output_col: String,
    /// Rows with a null or NaN input: error (default), skip, or keep (nulls as NaN).
    pub handle_invalid: HandleInvalid,
}

impl VectorAssembler {
    /// Assembles `input_cols` into `features`.
    pub fn new<S: Into<String>>(input_cols: impl IntoIterator<Item = S>) -> Self {
        Self {
            input_cols: input_cols.into_iter().map(Into::into).collect(),
            output_col: "features".into(),
            handle_invalid: HandleInvalid::Error,
        }
    }

    /// Sets the output column.
    pub fn output_col(mut self, name: impl Into<String>) -> Self {
        self.output_col = name.into();
        self
    }

    /// Sets how rows with null or NaN inputs are handled.
    pub fn handle_invalid(mut self, mode: HandleInvalid) -> Self {
        self.handle_invalid = mode;
        self
    }

    /// Reads an assembler written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        load_json(path.as_ref(), "VectorAssembler")
    }
}

impl Transformer for VectorAssembler {
    fn class(&self) -> &'static str {
        "VectorAssembler"
    }

    fn transform_logical(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame> {
        if self.input_cols.is_empty() {
            return Err(MlError::param(
                "VectorAssembler",
                "input_cols",
                "needs at least one column",
            ));
        }
        let schema = df.schema().as_arrow().clone();
        for c in &self.input_cols {
            let field = schema
                .field_with_name(c)
                .map_err(|_| missing_column(&schema, c))?;
            let ok = match field.data_type() {
                DataType::FixedSizeList(item, _) => item.data_type().is_numeric(),
                t => t.is_numeric() || t == &DataType::Boolean,
            };
            if !ok {
                return Err(MlError::column(
                    c,
                    format!(
                        "VectorAssembler takes numeric and vector columns, found {}",
                        field.data_type()
                    ),
                ));
            }
        }
        let args = self.input_cols.iter().map(|c| quoted(c)).collect();
        let expr = udf::assemble(
            args,
            &udf::AssembleParams {
                columns: self.input_cols.clone(),
                handle_invalid: self.handle_invalid,
            },
        );
        with_checked_column(df, &self.output_col, expr, self.handle_invalid)
    }

    fn save(&self, path: &Path) -> Result<()> {
        save_json(path, self.class(), self)
    }
}
