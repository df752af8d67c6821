//! `ember serve`'s Prometheus metrics: requests and errors by model, protocol and status,
//! request latency, the rows of each evaluated batch, and the version each model serves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The model asked for.
    pub model: String,
    /// `v2` (Open Inference Protocol) or `v1` (TensorFlow Serving's REST API).
    pub protocol: String,
    /// The HTTP status answered.
    pub code: String,
}

/// Labels of a model.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The model's name.
    pub model: String,
}

/// Labels of a latency sample.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// The model asked for.
    pub model: String,
    /// `v2` or `v1`.
    pub protocol: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn batch_histogram() -> Histogram {
    // 1 to 4096 rows.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// The metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Requests answered with an error status.
    pub errors: Family<RequestLabels, Counter>,
    /// Seconds from a request's arrival to its answer.
    pub latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Rows of each batch the pipeline evaluated (merged requests count once).
    pub batch_rows: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// The newest version loaded of each model.
    pub version: Family<ModelLabels, Gauge>,
    /// Versions that failed to load.
    pub load_failures: Family<ModelLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ember_serve");
        let requests = Family::<RequestLabels, Counter>::default();
        let errors = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let batch_rows = Family::<ModelLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            batch_histogram,
        );
        let version = Family::<ModelLabels, Gauge>::default();
        let load_failures = Family::<ModelLabels, Counter>::default();
        registry.register("requests", "Requests answered", requests.clone());
        registry.register(
            "errors",
            "Requests answered with an error status",
            errors.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Seconds from a request's arrival to its answer",
            latency.clone(),
        );
        registry.register(
            "batch_rows",
            "Rows in each batch the pipeline evaluated (merged requests count once)",
            batch_rows.clone(),
        );
        registry.register(
            "model_version",
            "The newest version loaded of each model",
            version.clone(),
        );
        registry.register(
            "model_load_failures",
            "Model versions that failed to load",
            load_failures.clone(),
        );
        Self {
            registry,
            requests,
            errors,
            latency,
            batch_rows,
            version,
            load_failures,
        }
    }
}

impl Metrics {
    /// The metrics in the OpenMetrics text format (which Prometheus scrapes).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts an answered request.
    pub fn request(&self, model: &str, protocol: &str, code: u16, seconds: f64) {
        let labels = RequestLabels {
            model: model.to_string(),
            protocol: protocol.to_string(),
            code: code.to_string(),
        };
        self.requests.get_or_create(&labels).inc();
        if code >= 400 {
            self.errors.get_or_create(&labels).inc();
        }
        self.latency
            .get_or_create(&LatencyLabels {
                model: model.to_string(),
                protocol: protocol.to_string(),
            })
            .observe(seconds);
    }

    /// Records the rows of an evaluated batch.
    pub fn batch(&self, model: &str, rows: usize) {
        self.batch_rows
            .get_or_create(&ModelLabels {
                model: model.to_string(),
            })
            .observe(rows as f64);
    }
}
