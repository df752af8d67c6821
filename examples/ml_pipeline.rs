//! A machine-learning pipeline on a local cluster: the Wisconsin breast cancer data set
//! (shipped under `tests/data/`) is split into training and test rows, a pipeline indexes
//! the diagnosis, assembles and scales the 30 features and fits a logistic regression on
//! the executors; the model is evaluated on the held-out rows, saved, loaded and used
//! again. The Iris data set then goes through a multinomial model and k-means.
//!
//! Run it with `cargo run --release --example ml_pipeline`; `-- --save DIR` also saves the
//! fitted Iris pipeline (measurements in, species out) to DIR for `ember serve`.

use ember::ml::*;
use ember::prelude::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Lets this program serve as its own executor binary.
    ember::run_executor_if_requested();
    ember::init_tracing("warn");
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

    let session = Session::builder().executors(2).local_cluster().await?;
    println!(
        "local cluster: {} executor processes",
        session.executors().len()
    );

    // Binary classification with a held-out split.
    let cancer = session
        .read_csv(format!("{data}/breast_cancer.csv"))
        .await?;
    let features: Vec<String> = cancer
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != "diagnosis")
        .collect();
    let parts = cancer.random_split(&[0.75, 0.25], 7)?;
    let (train, test) = (&parts[0], &parts[1]);
    let pipeline = Pipeline::new()
        .estimator(StringIndexer::new("diagnosis", "label"))
        .transformer(VectorAssembler::new(features).output_col("raw"))
        .estimator(
            StandardScaler::new()
                .input_col("raw")
                .output_col("features"),
        )
        .estimator(
            LogisticRegression::new()
                .reg_param(0.01)
                .elastic_net_param(0.5),
        );
    let model = pipeline.fit(train).await?;
    let scored = model.transform(test)?;
    let auc = BinaryClassificationEvaluator::new()
        .evaluate(&scored)
        .await?;
    let pr = BinaryClassificationEvaluator::new()
        .metric(BinaryMetric::AreaUnderPr)
        .evaluate(&scored)
        .await?;
    let accuracy = MulticlassClassificationEvaluator::new()
        .metric(MulticlassMetric::Accuracy)
        .evaluate(&scored)
        .await?;
    println!(
        "breast cancer: {} training rows, {} test rows",
        train.count().await?,
        test.count().await?
    );
    println!("  test AUC-ROC {auc:.4}, AUC-PR {pr:.4}, accuracy {accuracy:.4}");

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cancer-model");
    model.save(&path)?;
    let loaded = PipelineModel::load(&path)?;
    let again = BinaryClassificationEvaluator::new()
        .evaluate(&loaded.transform(test)?)
        .await?;
    println!("  saved to {}, loaded: AUC-ROC {again:.4}", path.display());

    // Multiclass and clustering on Iris: raw measurements in, species out.
    let iris = session.read_csv(format!("{data}/iris.csv")).await?;
    let iris_model = Pipeline::new()
        .estimator(StringIndexer::new("species", "label"))
        .transformer(VectorAssembler::new([
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
        ]))
        .estimator(LogisticRegression::new().reg_param(0.01))
        .fit(&iris)
        .await?;
    let f1 = MulticlassClassificationEvaluator::new()
        .evaluate(&iris_model.transform(&iris)?)
        .await?;
    println!("iris: multinomial logistic regression, training F1 {f1:.4}");
    if let Some(dir) = save_dir() {
        iris_model.save(&dir)?;
        println!(
            "  saved the Iris pipeline to {}; serve it with: ember serve --model iris={}",
            dir.display(),
            dir.display()
        );
    }
    // The pipeline's first two stages (indexer, assembler) prepare the rows for k-means.
    let prepared = PipelineModel::new(iris_model.stages()[..2].to_vec()).transform(&iris)?;
    let kmeans = KMeans::new().k(3).seed(1).fit(&prepared).await?;
    let silhouette = ClusteringEvaluator::new()
        .evaluate(&kmeans.transform(&prepared)?)
        .await?;
    println!(
        "iris: k-means k=3, {} iterations, cost {:.3}, silhouette {silhouette:.4}",
        kmeans.summary.iterations, kmeans.training_cost
    );
    Ok(())
}

/// The directory of `--save DIR`, if given.
fn save_dir() -> Option<std::path::PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--save")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
}
