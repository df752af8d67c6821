//! StandardScaler and MinMaxScaler, and the fitted affine ScalerModel they share.

#[allow(unused_imports)]
use super::*;

/// Scales each feature of a vector column by its standard deviation (and optionally
/// centres it on its mean), like Spark ML's `StandardScaler`. A feature whose standard
/// deviation is 0 becomes 0.
#[derive(Debug, Clone, PartialEq)]
pub struct StandardScaler {
    /// Vector column to scale (default `features`).
    pub input_col: String,
    /// Scaled vector column (default `scaled_features`).
    pub output_col: String,
    /// Subtract the mean (default false, as in Spark).
    pub with_mean: bool,
    /// Divide by the standard deviation (default true).
    pub with_std: bool,
}

impl Default for StandardScaler {
    fn default() -> Self {
        Self {
            input_col: "features".into(),
            output_col: "scaled_features".into(),
            with_mean: false,
            with_std: true,
        }
    }
}

impl StandardScaler {
    /// A scaler with Spark's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the input column.
    pub fn input_col(mut self, name: impl Into<String>) -> Self {
        self.input_col = name.into();
        self
    }

    /// Sets the output column.
    pub fn output_col(mut self, name: impl Into<String>) -> Self {
        self.output_col = name.into();
        self
    }

    /// Sets whether to centre on the mean.
    pub fn with_mean(mut self, yes: bool) -> Self {
        self.with_mean = yes;
        self
    }

    /// Sets whether to divide by the standard deviation.
    pub fn with_std(mut self, yes: bool) -> Self {
        self.with_std = yes;
        self
    }
}

#[async_trait]
impl<F: Frame> Estimator<F> for StandardScaler {
    type Model = ScalerModel;

    async fn fit(&self, df: &F) -> Result<ScalerModel> {
        let s = feature_summary(df, &self.input_col, None, "StandardScaler").await?;
        let scale: Vec<f64> = s
            .std
            .iter()
            .map(|sd| {
                if !self.with_std {
                    1.0
                } else if *sd > 0.0 {
                    1.0 / sd
                } else {
                    0.0
                }
            })
            .collect();
        let offset = s
            .mean
            .iter()
            .zip(&scale)
            .map(|(m, sc)| if self.with_mean { -m * sc } else { 0.0 })
            .collect();
        Ok(ScalerModel {
            class: "StandardScalerModel",
            input_col: self.input_col.clone(),
            output_col: self.output_col.clone(),
            scale,
            offset,
            measured: [s.mean.clone(), s.std.clone()],
        })
    }
}

/// Rescales each feature of a vector column to `[min, max]` (default `[0, 1]`) from the
/// range seen when fitting, like Spark ML's `MinMaxScaler`; a constant feature becomes the
/// middle of the range.
#[derive(Debug, Clone, PartialEq)]
pub struct MinMaxScaler {
    /// Vector column to scale (default `features`).
    pub input_col: String,
    /// Scaled vector column (default `scaled_features`).
    pub output_col: String,
    /// Lower bound of the output range.
    pub min: f64,
    /// Upper bound of the output range.
    pub max: f64,
}

impl Default for MinMaxScaler {
    fn default() -> Self {
        Self {
            input_col: "features".into(),
            output_col: "scaled_features".into(),
            min: 0.0,
            max: 1.0,
        }
    }
}

impl MinMaxScaler {
    /// A scaler to `[0, 1]`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the input column.
    pub fn input_col(mut self, name: impl Into<String>) -> Self {
        self.input_col = name.into();
        self
    }

    /// Sets the output column.
    pub fn output_col(mut self, name: impl Into<String>) -> Self {
        self.output_col = name.into();
        self
    }

    /// Sets the output range.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.min = min;
        self.max = max;
        self
    }
}

#[async_trait]
impl<F: Frame> Estimator<F> for MinMaxScaler {
    type Model = ScalerModel;

    async fn fit(&self, df: &F) -> Result<ScalerModel> {
        if self.min >= self.max || !self.min.is_finite() || !self.max.is_finite() {
            return Err(MlError::param(
                "MinMaxScaler",
                "range",
                format!("min {} must be below max {}", self.min, self.max),
            ));
        }
        let s = feature_summary(df, &self.input_col, None, "MinMaxScaler").await?;
        let mut scale = Vec::with_capacity(s.min.len());
        let mut offset = Vec::with_capacity(s.min.len());
        for (lo, hi) in s.min.iter().zip(&s.max) {
            let range = hi - lo;
            if range > 0.0 {
                let sc = (self.max - self.min) / range;
                scale.push(sc);
                offset.push(self.min - lo * sc);
            } else {
                scale.push(0.0);
                offset.push(0.5 * (self.min + self.max));
            }
        }
        Ok(ScalerModel {
            class: "MinMaxScalerModel",
            input_col: self.input_col.clone(),
            output_col: self.output_col.clone(),
            scale,
            offset,
            measured: [s.min.clone(), s.max.clone()],
        })
    }
}

/// A fitted scaler (standard or min-max): `x * scale + offset` per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalerModel {
    class: &'static str,
    /// Vector column scaled.
    pub input_col: String,
    /// Scaled vector column.
    pub output_col: String,
    /// Per-feature factor.
    pub scale: Vec<f64>,
    /// Per-feature offset.
    pub offset: Vec<f64>,
    /// What fitting measured per feature: mean and standard deviation (standard scaler)
    /// or minimum and maximum (min-max scaler); empty in a model saved without them.
    pub measured: [Vec<f64>; 2],
}

impl ScalerModel {
    /// Reads a scaler written by [`Transformer::save`].
    ///
    /// # Errors
    ///
    /// The directory is missing or holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = read_metadata(path)?;
        check_class(
            path,
            &meta.class,
            &["StandardScalerModel", "MinMaxScalerModel"],
        )?;
        let arrays = read_arrays(path)?;
        Ok(Self {
            class: if meta.class == "StandardScalerModel" {
                "StandardScalerModel"
            } else {
                "MinMaxScalerModel"
            },
            input_col: persist::param(&meta, path, "input_col")?,
            output_col: persist::param(&meta, path, "output_col")?,
            scale: persist::array(&arrays, path, "scale")?,
            offset: persist::array(&arrays, path, "offset")?,
            measured: [
                arrays.get("measured_0").cloned().unwrap_or_default(),
                arrays.get("measured_1").cloned().unwrap_or_default(),
            ],
        })
    }
}

impl Transformer for ScalerModel {
    fn class(&self) -> &'static str {
        self.class
    }

    fn transform_logical(
        &self,
        df: datafusion::dataframe::DataFrame,
    ) -> Result<datafusion::dataframe::DataFrame> {
        crate::vector::check_fitted_dimension(
            df.schema().as_arrow(),
            &self.input_col,
            self.scale.len(),
        )?;
        let expr = udf::affine(
            quoted(&self.input_col),
            &udf::AffineParams {
                scale: self.scale.clone(),
                offset: self.offset.clone(),
            },
        );
        Ok(df.with_column(&self.output_col, expr)?)
    }

    fn save(&self, path: &Path) -> Result<()> {
        save_stage(
            path,
            self.class,
            serde_json::json!({ "input_col": self.input_col, "output_col": self.output_col }),
            &[
                ("scale", &self.scale),
                ("offset", &self.offset),
                ("measured_0", &self.measured[0]),
                ("measured_1", &self.measured[1]),
            ],
            |_| Ok(()),
        )
    }
}
