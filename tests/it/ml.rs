//! mllib on a cluster: coefficients against independent f64 solves, k-means on blobs, real
//! data through full pipelines with save and load, the tree reduction's shape, a killed
//! executor during training, and bad input.

use crate::common;
use crate::common::reference;

use std::path::Path;
use std::sync::Arc;

use crate::common::{builder, session, Mode};
use arrow::array::{Array, AsArray, Float64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use ember::ml::*;
use ember::prelude::*;
use parquet::arrow::ArrowWriter;

/// A deterministic normal sampler (splitmix64 + Box-Muller).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// Rows of `d` features (rounded to f32, as mllib stores them) and a label.
struct Data {
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
}

fn features(rng: &mut Rng, n: usize, d: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| {
            (0..d)
                .map(|j| f64::from((rng.normal() * (1.0 + j as f64 * 0.5) + j as f64) as f32))
                .collect()
        })
        .collect()
}

fn logistic_data(n: usize, d: usize, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let x = features(&mut rng, n, d);
    let w: Vec<f64> = (0..d)
        .map(|j| if j % 2 == 0 { 0.8 } else { -0.5 })
        .collect();
    let y = x
        .iter()
        .map(|row| {
            let m: f64 = row.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() - 0.7;
            f64::from(rng.uniform() < 1.0 / (1.0 + (-m).exp()))
        })
        .collect();
    Data { x, y }
}

fn multiclass_data(n: usize, d: usize, classes: usize, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let x = features(&mut rng, n, d);
    let y = x
        .iter()
        .map(|row| {
            let margins: Vec<f64> = (0..classes)
                .map(|k| {
                    row.iter()
                        .enumerate()
                        .map(|(j, v)| v * (((k + j) % 3) as f64 - 1.0) * 0.6)
                        .sum::<f64>()
                })
                .collect();
            let max = margins.iter().copied().fold(f64::MIN, f64::max);
            let total: f64 = margins.iter().map(|m| (m - max).exp()).sum();
            let mut u = rng.uniform() * total;
            let mut label = classes - 1;
            for (k, m) in margins.iter().enumerate() {
                u -= (m - max).exp();
                if u <= 0.0 {
                    label = k;
                    break;
                }
            }
            label as f64
        })
        .collect();
    Data { x, y }
}

fn linear_data(n: usize, d: usize, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let x = features(&mut rng, n, d);
    let y = x
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(j, v)| v * (j as f64 - 1.5))
                .sum::<f64>()
                + 3.0
                + rng.normal()
        })
        .collect();
    Data { x, y }
}

fn names(d: usize) -> Vec<String> {
    (0..d).map(|j| format!("x{j}")).collect()
}

/// Writes `data` as `files` Parquet files with columns x0.. and label.
fn write_data(dir: &Path, data: &Data, files: usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let d = data.x[0].len();
    let mut fields: Vec<Field> = names(d)
        .iter()
        .map(|n| Field::new(n, DataType::Float64, true))
        .collect();
    fields.push(Field::new("label", DataType::Float64, true));
    let schema = Arc::new(Schema::new(fields));
    let per_file = data.x.len().div_ceil(files);
    for (f, rows) in (0..data.x.len())
        .collect::<Vec<_>>()
        .chunks(per_file)
        .enumerate()
    {
        let mut columns: Vec<Arc<dyn Array>> = (0..d)
            .map(|j| {
                Arc::new(Float64Array::from_iter_values(
                    rows.iter().map(|r| data.x[*r][j]),
                )) as Arc<dyn Array>
            })
            .collect();
        columns.push(Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| data.y[*r]),
        )));
        let batch = RecordBatch::try_new(schema.clone(), columns).expect("batch");
        let file = std::fs::File::create(dir.join(format!("part-{f}.parquet"))).expect("create");
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None).expect("writer");
        writer.write(&batch).expect("write");
        writer.close().expect("close");
    }
}

async fn assembled(session: &Session, dir: &Path, d: usize) -> DataFrame {
    let df = session.read_parquet(dir).await.expect("read");
    VectorAssembler::new(names(d))
        .transform(&df)
        .expect("assemble")
}

fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol,
            "{what}[{i}]: {a} vs reference {e} (all: {actual:?} vs {expected:?})"
        );
    }
}

/// Unbiased standard deviation of each column.
fn column_std(x: &[Vec<f64>]) -> Vec<f64> {
    let n = x.len() as f64;
    (0..x[0].len())
        .map(|j| {
            let mean = x.iter().map(|r| r[j]).sum::<f64>() / n;
            (x.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_logistic_regression_matches_newton() {
    let data = logistic_data(3000, 4, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    write_data(dir.path(), &data, 4);
    let session = session(Mode::InProcess, 2).await;
    let df = assembled(&session, dir.path(), 4).await;

    // L2, unstandardized: the penalty is on the coefficients as they are.
    let model = LogisticRegression::new()
        .reg_param(0.01)
        .standardization(false)
        .tol(1e-12)
        .max_iter(300)
        .fit(&df)
        .await
        .expect("fit");
    let reference = reference::logistic_newton(&data.x, &data.y, 0.01, true);
    assert!(model.is_binary());
    assert_close(&model.coefficients, &reference[..4], 1e-3, "coefficients");
    assert_close(&model.intercepts, &reference[4..], 1e-3, "intercept");
    assert!(model.summary.iterations > 1 && model.summary.passes >= model.summary.iterations);
    assert_eq!(model.summary.rows, 3000);

    // Standardized: the penalty is on coefficients times the features' standard deviations.
    let model = LogisticRegression::new()
        .reg_param(0.05)
        .tol(1e-12)
        .max_iter(300)
        .fit(&df)
        .await
        .expect("fit standardized");
    let std = column_std(&data.x);
    let scaled: Vec<Vec<f64>> = data
        .x
        .iter()
        .map(|r| r.iter().zip(&std).map(|(v, s)| v / s).collect())
        .collect();
    let beta = reference::logistic_newton(&scaled, &data.y, 0.05, true);
    let expected: Vec<f64> = beta[..4].iter().zip(&std).map(|(b, s)| b / s).collect();
    assert_close(
        &model.coefficients,
        &expected,
        1e-3,
        "standardized coefficients",
    );
    assert_close(
        &model.intercepts,
        &beta[4..],
        1e-3,
        "standardized intercept",
    );

    // Gradient descent reaches the same optimum (more slowly).
    let gd = LogisticRegression::new()
        .reg_param(0.01)
        .standardization(false)
        .solver(Solver::GradientDescent)
        .step_size(0.5)
        .tol(1e-14)
        .max_iter(3000)
        .fit(&df)
        .await
        .expect("gradient descent");
    let reference = reference::logistic_newton(&data.x, &data.y, 0.01, true);
    assert_close(
        &gd.coefficients,
        &reference[..4],
        5e-3,
        "gradient descent coefficients",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elastic_net_logistic_regression_matches_proximal_newton() {
    let data = logistic_data(2000, 5, 2);
    let dir = tempfile::tempdir().expect("tempdir");
    write_data(dir.path(), &data, 3);
    let session = session(Mode::InProcess, 2).await;
    let df = assembled(&session, dir.path(), 5).await;
    let model = LogisticRegression::new()
        .reg_param(0.03)
        .elastic_net_param(0.7)
        .standardization(false)
        .tol(1e-12)
        .max_iter(500)
        .fit(&df)
        .await
        .expect("fit");
    let reference = reference::elastic_net_logistic(&data.x, &data.y, 0.03, 0.7, true);
    assert_close(&model.coefficients, &reference[..5], 1e-3, "coefficients");
    assert_close(&model.intercepts, &reference[5..], 1e-3, "intercept");
    // Coordinates the exact solution zeroes are exactly zero here too.
    for (c, r) in model.coefficients.iter().zip(&reference[..5]) {
        if *r == 0.0 {
            assert_eq!(
                *c, 0.0,
                "OWL-QN keeps exact zeros: {:?}",
                model.coefficients
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multinomial_logistic_regression_matches_newton() {
    let data = multiclass_data(2400, 3, 3, 3);
    let dir = tempfile::tempdir().expect("tempdir");
    write_data(dir.path(), &data, 4);
    let session = session(Mode::InProcess, 2).await;
    let df = assembled(&session, dir.path(), 3).await;
    let model = LogisticRegression::new()
        .reg_param(0.02)
        .standardization(false)
        .tol(1e-12)
        .max_iter(500)
        .fit(&df)
        .await
        .expect("fit");
    assert_eq!(model.classes, 3);
    let labels: Vec<usize> = data.y.iter().map(|v| *v as usize).collect();
    let (coefficients, intercepts) = reference::multinomial_newton(&data.x, &labels, 3, 0.02, true);
    let flat: Vec<f64> = coefficients.concat();
    assert_close(&model.coefficients, &flat, 1e-3, "coefficients");
    assert_close(&model.intercepts, &intercepts, 1e-3, "intercepts");

    // Predictions: probability rows sum to 1, the prediction is their argmax.
    let scored = model.transform(&df).expect("transform");
    let rows = scored
        .clone()
        .select_columns(&["probability", "prediction"])
        .expect("select")
        .collect()
        .await
        .expect("collect");
    let mut seen = 0;
    for batch in &rows {
        let probability = batch.column(0).as_fixed_size_list();
        let prediction = batch
            .column(1)
            .as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..batch.num_rows() {
            let p = probability.value(i);
            let p = p.as_primitive::<arrow::datatypes::Float64Type>();
            let total: f64 = p.values().iter().sum();
            assert!((total - 1.0).abs() < 1e-9);
            let best = (0..3)
                .max_by(|a, b| p.value(*a).total_cmp(&p.value(*b)))
                .unwrap_or(0);
            assert_eq!(prediction.value(i), best as f64);
            seen += 1;
        }
    }
    assert_eq!(seen, 2400);
    let accuracy = MulticlassClassificationEvaluator::new()
        .metric(MulticlassMetric::Accuracy)
        .evaluate(&scored)
        .await
        .expect("accuracy");
    assert!(accuracy > 0.5, "accuracy {accuracy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_regression_matches_the_normal_equations() {
    let data = linear_data(2500, 4, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    write_data(dir.path(), &data, 3);
    let session = session(Mode::InProcess, 2).await;
    let df = assembled(&session, dir.path(), 4).await;
    let reference = reference::normal_equations(&data.x, &data.y, 0.1, true);
    for solver in [RegressionSolver::Normal, RegressionSolver::Lbfgs] {
        let model = LinearRegression::new()
            .reg_param(0.1)
            .standardization(false)
            .solver(solver)
            .tol(1e-12)
            .max_iter(500)
            .fit(&df)
            .await
            .expect("fit");
        assert_close(
            &model.coefficients,
            &reference[..4],
            1e-3,
            &format!("{solver:?} coefficients"),
        );
        assert!(
            (model.intercept - reference[4]).abs() < 1e-3,
            "{solver:?} intercept"
        );
    }
    let model = LinearRegression::new().fit(&df).await.expect("plain fit");
    let unpenalized = reference::normal_equations(&data.x, &data.y, 0.0, true);
    assert_close(&model.coefficients, &unpenalized[..4], 1e-6, "exact solve");
    let scored = model.transform(&df).expect("transform");
    let rmse = RegressionEvaluator::new()
        .evaluate(&scored)
        .await
        .expect("rmse");
    let r2 = RegressionEvaluator::new()
        .metric(RegressionMetric::R2)
        .evaluate(&scored)
        .await
        .expect("r2");
    // The noise has standard deviation 1.
    assert!((rmse - 1.0).abs() < 0.1, "rmse {rmse}");
    assert!(r2 > 0.8 && r2 < 1.0, "r2 {r2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmeans_recovers_the_centres_of_separated_blobs() {
    let centres = [[0.0, 0.0], [10.0, 10.0], [-10.0, 8.0]];
    let mut rng = Rng(5);
    let mut x = Vec::new();
    for i in 0..1500 {
        let c = centres[i % 3];
        x.push(vec![
            f64::from((c[0] + rng.normal() * 0.5) as f32),
            f64::from((c[1] + rng.normal() * 0.5) as f32),
        ]);
    }
    let data = Data {
        y: vec![0.0; x.len()],
        x,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    write_data(dir.path(), &data, 4);
    let session = session(Mode::InProcess, 2).await;
    let df = assembled(&session, dir.path(), 2).await;
    let model = KMeans::new().k(3).seed(7).fit(&df).await.expect("fit");
    assert!(model.summary.converged, "{:?}", model.summary);
    for c in &centres {
        let nearest = model
            .cluster_centers()
            .iter()
            .map(|m| ((m[0] - c[0]).powi(2) + (m[1] - c[1]).powi(2)).sqrt())
            .fold(f64::INFINITY, f64::min);
        assert!(
            nearest < 0.1,
            "centre {c:?} found {:?}",
            model.cluster_centers()
        );
    }
    let scored = model.transform(&df).expect("transform");
    let silhouette = ClusteringEvaluator::new()
        .evaluate(&scored)
        .await
        .expect("silhouette");
    assert!(silhouette > 0.9, "silhouette {silhouette}");
    let random = KMeans::new()
        .k(3)
        .init_mode(InitMode::Random)
        .seed(3)
        .max_iter(50)
        .fit(&df)
        .await
        .expect("random init");
    assert_eq!(random.cluster_centers().len(), 3);
}

fn data_file(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iris_goes_through_a_full_pipeline_saved_and_loaded() {
    let session = session(Mode::Processes, 2).await;
    let df = session
        .read_csv(data_file("iris.csv"))
        .await
        .expect("read iris");
    let pipeline = Pipeline::new()
        .estimator(StringIndexer::new("species", "label"))
        .transformer(VectorAssembler::new([
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
        ]))
        .estimator(StandardScaler::new().with_mean(true).output_col("scaled"))
        .estimator(
            LogisticRegression::new()
                .features_col("scaled")
                .reg_param(0.01)
                .max_iter(200),
        );
    let model = pipeline.fit(&df).await.expect("fit pipeline");
    let scored = model.transform(&df).expect("transform");
    let accuracy = MulticlassClassificationEvaluator::new()
        .metric(MulticlassMetric::Accuracy)
        .evaluate(&scored)
        .await
        .expect("accuracy");
    let f1 = MulticlassClassificationEvaluator::new()
        .evaluate(&scored)
        .await
        .expect("f1");
    assert!(accuracy > 0.95, "accuracy {accuracy}");
    assert!(f1 > 0.95, "f1 {f1}");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("iris-model");
    model.save(&path).expect("save");
    assert!(model.save(&path).is_err(), "saving over a model is refused");
    let loaded = PipelineModel::load(&path).expect("load");
    let predictions = |df: DataFrame| async move {
        let batches = df
            .select_columns(&["probability", "prediction"])
            .expect("select")
            .collect()
            .await
            .expect("collect");
        let mut out = Vec::new();
        for b in &batches {
            let p = b.column(0).as_fixed_size_list();
            let values = p.values().as_primitive::<arrow::datatypes::Float64Type>();
            out.extend(values.values().iter().map(|v| v.to_bits()));
            let pred = b.column(1).as_primitive::<arrow::datatypes::Float64Type>();
            out.extend(pred.values().iter().map(|v| v.to_bits()));
        }
        out
    };
    let ordered = |df: DataFrame| {
        df.sort(vec![
            col("sepal_length").sort(true, true),
            col("sepal_width").sort(true, true),
            col("petal_length").sort(true, true),
            col("petal_width").sort(true, true),
        ])
        .expect("sort")
    };
    let before = predictions(ordered(scored)).await;
    let after = predictions(ordered(loaded.transform(&df).expect("transform loaded"))).await;
    assert_eq!(before.len(), 150 * 4);
    assert_eq!(
        before, after,
        "a loaded model predicts exactly what the saved one did"
    );
    assert!(PipelineModel::load(dir.path().join("nothing")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breast_cancer_binary_pipeline_with_a_held_out_split() {
    let session = session(Mode::InProcess, 2).await;
    let df = session
        .read_csv(data_file("breast_cancer.csv"))
        .await
        .expect("read");
    let feature_cols: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != "diagnosis")
        .collect();
    assert_eq!(feature_cols.len(), 30);
    let parts = df.random_split(&[0.7, 0.3], 11).expect("split");
    let (train, test) = (&parts[0], &parts[1]);
    let (n_train, n_test) = (
        train.count().await.expect("count"),
        test.count().await.expect("count"),
    );
    assert_eq!(n_train + n_test, 569);
    assert!((350..450).contains(&n_train), "train rows {n_train}");
    let pipeline = Pipeline::new()
        .estimator(StringIndexer::new("diagnosis", "label"))
        .transformer(VectorAssembler::new(feature_cols.clone()))
        .estimator(MinMaxScaler::new().output_col("scaled"))
        .estimator(
            LogisticRegression::new()
                .features_col("scaled")
                .reg_param(0.001)
                .max_iter(200),
        );
    let model = pipeline.fit(train).await.expect("fit");
    let scored = model.transform(test).expect("transform");
    let auc = BinaryClassificationEvaluator::new()
        .evaluate(&scored)
        .await
        .expect("auc");
    let pr = BinaryClassificationEvaluator::new()
        .metric(BinaryMetric::AreaUnderPr)
        .evaluate(&scored)
        .await
        .expect("pr");
    assert!(auc > 0.97, "held-out AUC {auc}");
    assert!(pr > 0.9, "held-out AUC-PR {pr}");
    // The split is a function of the rows and the seed.
    let again = df.random_split(&[0.7, 0.3], 11).expect("split");
    assert_eq!(again[0].count().await.expect("count"), n_train);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partials_merge_in_a_tree_deeper_than_one_level() {
    let data = logistic_data(4000, 3, 6);
    let dir = tempfile::tempdir().expect("tempdir");
    write_data(dir.path(), &data, 12);
    let session = session(Mode::InProcess, 6).await;
    let df = assembled(&session, dir.path(), 3).await;
    let lr = |fan_in: usize| {
        LogisticRegression::new()
            .reg_param(0.01)
            .fan_in(fan_in)
            .tol(1e-10)
    };
    let narrow = lr(2).fit(&df).await.expect("fan-in 2");
    let levels = &narrow.summary.tree_levels;
    // One partial per partition on 6 executors, merged per executor when one holds
    // several, then across executors by twos (6 -> 3 -> 2), then on the driver (1).
    assert!(levels[0] >= 6, "levels {levels:?}");
    assert_eq!(levels.last(), Some(&1), "levels {levels:?}");
    assert!(
        levels.len() >= 4,
        "at least two merge levels on executors: {levels:?}"
    );
    assert!(
        levels.windows(2).all(|w| w[1] < w[0]),
        "levels shrink: {levels:?}"
    );
    // Past the per-executor level, no merge reads more than the fan-in.
    let cross = &levels[levels.len() - 3..];
    assert!(
        cross.windows(2).all(|w| w[1] >= w[0].div_ceil(2)),
        "fan-in 2: {levels:?}"
    );
    let wide = lr(8).fit(&df).await.expect("fan-in 8");
    assert!(wide.summary.tree_levels.len() < levels.len());
    assert_close(
        &narrow.coefficients,
        &wide.coefficients,
        1e-9,
        "same model whatever the tree",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_survives_a_killed_executor_process() {
    let data = logistic_data(6000, 4, 8);
    let dir = tempfile::tempdir().expect("tempdir");
    write_data(dir.path(), &data, 6);
    let session = common::start(Mode::Processes, builder(3)).await;
    let df = assembled(&session, dir.path(), 4).await;
    let lr = LogisticRegression::new()
        .reg_param(0.01)
        .tol(0.0)
        .max_iter(25);
    let reference = lr.fit(&df).await.expect("uninterrupted");

    let mut events = session.driver().subscribe();
    let killer = {
        let session = session.clone();
        tokio::spawn(async move {
            // Let packing and a few iterations run first.
            let mut stages = 0;
            loop {
                match events.recv().await {
                    Ok(ember::driver::SchedulerEvent::StageCompleted { .. }) => {
                        stages += 1;
                        if stages == 12 {
                            return session.kill_executor(1).expect("kill");
                        }
                    }
                    Ok(_) => {}
                    // Lagging loses events of every kind: count them as stages, which
                    // only brings the kill forward.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        stages += missed as usize;
                    }
                    Err(_) => return String::new(),
                }
            }
        })
    };
    let model = lr
        .fit(&df)
        .await
        .expect("training completes after the kill");
    let victim = killer.await.expect("killer");
    assert!(!victim.is_empty(), "an executor was killed during training");
    assert_eq!(session.executors().len(), 2, "the victim is gone");
    assert!(
        model.summary.partitions_recomputed > 0,
        "lost feature blocks were rebuilt: {:?}",
        model.summary
    );
    assert_close(
        &model.coefficients,
        &reference.coefficients,
        1e-4,
        "coefficients",
    );
    assert_close(&model.intercepts, &reference.intercepts, 1e-4, "intercept");
}

async fn one_table(session: &Session, rows: &str) -> DataFrame {
    session
        .sql(&format!("SELECT * FROM (VALUES {rows}) AS t(a, b, label)"))
        .await
        .expect("values")
}

/// The error message of a fit that must fail (`what` names the case).
async fn fit_error(lr: LogisticRegression, df: &DataFrame, what: &str) -> String {
    message(lr.fit(df).await.expect_err(what))
}

fn message(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_that_name_the_column() {
    let session = session(Mode::InProcess, 2).await;
    let assemble = |df: DataFrame| {
        VectorAssembler::new(["a", "b"])
            .transform(&df)
            .expect("assemble")
    };

    let nan_rows = one_table(
        &session,
        "(1.0, 2.0, 0.0), (CAST('NaN' AS DOUBLE), 1.0, 1.0)",
    )
    .await;
    // The assembler rejects NaN as it rejects null (Spark ML's handleInvalid)...
    let e = fit_error(
        LogisticRegression::new(),
        &assemble(nan_rows.clone()),
        "NaN feature",
    )
    .await;
    assert!(e.contains("'a'") && e.contains("NaN"), "{e}");
    // ... and when it keeps them, the model's fit names the vector column.
    let kept = VectorAssembler::new(["a", "b"])
        .handle_invalid(HandleInvalid::Keep)
        .transform(&nan_rows)
        .expect("assemble keeping NaN");
    let e = fit_error(LogisticRegression::new(), &kept, "NaN feature kept").await;
    assert!(e.contains("'features'") && e.contains("NaN"), "{e}");

    let inf_label = assemble(
        one_table(
            &session,
            "(1.0, 2.0, 0.0), (2.0, 1.0, CAST('inf' AS DOUBLE))",
        )
        .await,
    );
    let e = fit_error(LogisticRegression::new(), &inf_label, "inf label").await;
    assert!(e.contains("'label'") && e.contains("infinite"), "{e}");

    let three = assemble(one_table(&session, "(1.0, 2.0, 0.0), (2.0, 1.0, 2.0)").await);
    let e = fit_error(
        LogisticRegression::new().family(Family::Binomial),
        &three,
        "label 2 for binary",
    )
    .await;
    assert!(e.contains("'label'") && e.contains('2'), "{e}");

    let fractional = assemble(one_table(&session, "(1.0, 2.0, 0.5), (2.0, 1.0, 1.0)").await);
    let e = fit_error(LogisticRegression::new(), &fractional, "label 0.5").await;
    assert!(e.contains("'label'") && e.contains("fractional"), "{e}");

    let strings = session
        .sql("SELECT 'x' AS a, 1.0 AS b, 0.0 AS label")
        .await
        .expect("sql");
    let e = message(
        VectorAssembler::new(["a", "b"])
            .transform(&strings)
            .expect_err("string column"),
    );
    assert!(e.contains("'a'") && e.contains("Utf8"), "{e}");

    let not_vector = one_table(&session, "(1.0, 2.0, 0.0)").await;
    let e = fit_error(
        LogisticRegression::new().features_col("a"),
        &not_vector,
        "not a vector",
    )
    .await;
    assert!(e.contains("'a'") && e.contains("FixedSizeList"), "{e}");

    let e = fit_error(LogisticRegression::new(), &not_vector, "missing column").await;
    assert!(
        e.contains("'features'") && e.contains("no such column"),
        "{e}"
    );

    let empty = assemble(
        one_table(&session, "(1.0, 2.0, 0.0)")
            .await
            .filter(col("a").gt(lit(5.0)))
            .expect("filter"),
    );
    let e = fit_error(LogisticRegression::new(), &empty, "empty").await;
    assert!(e.contains("empty"), "{e}");

    let two_rows = assemble(one_table(&session, "(1.0, 2.0, 0.0), (2.0, 1.0, 1.0)").await);
    let e = message(
        KMeans::new()
            .k(5)
            .fit(&two_rows)
            .await
            .expect_err("k > rows"),
    );
    assert!(e.contains("k = 5") && e.contains("2 rows"), "{e}");

    let e = fit_error(
        LogisticRegression::new().reg_param(-1.0),
        &two_rows,
        "bad param",
    )
    .await;
    assert!(e.contains("reg_param"), "{e}");

    let nulls = one_table(&session, "(1.0, NULL, 0.0), (2.0, 1.0, 1.0)").await;
    let assembled_nulls = VectorAssembler::new(["a", "b"])
        .transform(&nulls)
        .expect("lazy");
    let e = message(assembled_nulls.collect().await.expect_err("null input"));
    assert!(e.contains("'b'") && e.contains("null"), "{e}");
    let skipped = VectorAssembler::new(["a", "b"])
        .handle_invalid(HandleInvalid::Skip)
        .transform(&nulls)
        .expect("skip");
    assert_eq!(skipped.count().await.expect("count"), 1);

    // The cluster is fine afterwards: a good fit still works.
    let ok = LogisticRegression::new()
        .reg_param(0.1)
        .fit(&two_rows)
        .await
        .expect("good fit");
    assert_eq!(ok.coefficients.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_transformers_compute_what_they_say() {
    let session = session(Mode::InProcess, 2).await;
    let df = session
        .sql(
            "SELECT * FROM (VALUES (1.0, 10.0, 'a'), (3.0, CAST('NaN' AS DOUBLE), 'b'), \
             (5.0, 30.0, 'a'), (NULL, 50.0, 'c')) AS t(u, v, s)",
        )
        .await
        .expect("values");
    let imputed = Imputer::new(["u", "v"]).fit(&df).await.expect("imputer");
    assert_close(&imputed.surrogates, &[3.0, 30.0], 1e-12, "means");
    let median = Imputer::new(["u"])
        .strategy(ImputerStrategy::Median)
        .fit(&df)
        .await
        .expect("median");
    assert_close(&median.surrogates, &[3.0], 1e-12, "median");
    let filled = imputed.transform(&df).expect("transform");
    let indexed = StringIndexer::new("s", "s_index")
        .fit(&filled)
        .await
        .expect("indexer");
    assert_eq!(indexed.labels, vec!["a", "b", "c"]);
    let indexed_df = indexed.transform(&filled).expect("index");
    let encoder = OneHotEncoder::new("s_index", "s_vec")
        .fit(&indexed_df)
        .await
        .expect("one-hot");
    assert_eq!(encoder.categories, 3);
    let encoded = encoder.transform(&indexed_df).expect("encode");
    let vectors = VectorAssembler::new(["u", "v", "s_vec"])
        .transform(&encoded)
        .expect("assemble");
    let scaled = MinMaxScaler::new().fit(&vectors).await.expect("min-max");
    let standard = StandardScaler::new()
        .with_mean(true)
        .fit(&vectors)
        .await
        .expect("standard");
    let out = standard
        .transform(&scaled.transform(&vectors).expect("scale"))
        .expect("standardize")
        .sort(vec![col("u").sort(true, true)])
        .expect("sort")
        .select_columns(&["features", "scaled_features", "s_index"])
        .expect("select")
        .collect()
        .await
        .expect("collect");
    let mut rows: Vec<(Vec<f32>, f64)> = Vec::new();
    for b in &out {
        let f = b.column(0).as_fixed_size_list();
        let idx = b.column(2).as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            let v = f.value(i);
            rows.push((
                v.as_primitive::<arrow::datatypes::Float32Type>()
                    .values()
                    .to_vec(),
                idx.value(i),
            ));
        }
    }
    // u imputed to 3 where null, v to 30 where NaN; s one-hot with the last category dropped.
    let expected = [
        (vec![1.0, 10.0, 1.0, 0.0], 0.0),
        (vec![3.0, 30.0, 0.0, 1.0], 1.0),
        (vec![3.0, 50.0, 0.0, 0.0], 2.0),
        (vec![5.0, 30.0, 1.0, 0.0], 0.0),
    ];
    let mut sorted = rows.clone();
    sorted.sort_by(|a, b| a.0[0].total_cmp(&b.0[0]).then(a.0[1].total_cmp(&b.0[1])));
    for ((got, gi), (want, wi)) in sorted.iter().zip(&expected) {
        assert_eq!(got, want);
        assert_eq!(gi, wi);
    }
    // Min-max: u spans 1..5, so 3 maps to 0.5.
    assert_close(
        &scaled.scale[..2],
        &[0.25, 1.0 / 40.0],
        1e-12,
        "min-max scale",
    );
    assert!((3.0 * scaled.scale[0] + scaled.offset[0] - 0.5).abs() < 1e-12);
    // Standard: the scaled column has mean 0.
    let sums = standard
        .offset
        .iter()
        .zip(&standard.scale)
        .map(|(o, s)| o / s)
        .collect::<Vec<_>>();
    assert!((sums[0] + 3.0).abs() < 1e-9, "mean of u is 3: {sums:?}");

    let unseen = session.sql("SELECT 'zzz' AS s").await.expect("sql");
    let e = message(
        indexed
            .transform(&unseen)
            .expect("lazy")
            .collect()
            .await
            .expect_err("unseen label"),
    );
    assert!(e.contains("'s'") && e.contains("zzz"), "{e}");
}
