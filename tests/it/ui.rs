//! The web UI's REST API against a real cluster of executor processes: a SQL job's stages
//! and tasks with their counts and bytes, quantiles, the stage DAG, a cached dataset under
//! storage that leaves on unpersist, a training run's objective per pass, a killed executor
//! shown lost with its reason, a failed job with its error, `/metrics`, and the history
//! server replaying the same application from its event log.

use crate::common;

use std::time::{Duration, Instant};

use crate::common::http::{address_of, json_request, request};
use crate::common::{builder, cached_sql, iris, orders_session, Mode, IRIS_INPUTS};
use ember::ml::*;
use ember::ui::UiConfig;
use serde_json::Value;

/// GET `path` of the UI at `addr` as JSON; panics unless the status is 200.
fn get(addr: &str, path: &str) -> Value {
    let (status, v) = json_request(addr, "GET", path, None);
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// Polls GET `path` until `done` holds (10 s at most): the UI is live, events arrive a
/// moment after the job returns.
fn wait_for(addr: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = get(addr, path);
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "GET {path} never got there: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_a_live_cluster_in_sparks_shape_and_the_history_server_replays_it() {
    let logs = tempfile::tempdir().expect("tmp");
    let ui = builder(2).ui(UiConfig::port(0)).event_log(logs.path());
    let (_data, session) = orders_session(Mode::Processes, ui, 2, 3_000).await;
    let url = session.ui_url().expect("the UI runs");
    let addr = address_of(&url);
    let app_id = session.driver().app_id().to_string();

    // The application.
    let apps = get(&addr, "/api/v1/applications");
    assert_eq!(apps.as_array().map(Vec::len), Some(1), "{apps}");
    assert_eq!(apps[0]["id"], app_id.as_str());
    let base = format!("/api/v1/applications/{app_id}");
    assert_eq!(
        get(&addr, "/api/v1/version")["ember"],
        env!("CARGO_PKG_VERSION")
    );

    // A query with a shuffle: stages and tasks with their counts and bytes.
    let sql = "SELECT region, sum(amount) AS total FROM orders GROUP BY region";
    let rows: usize = common::run_sql(&session, sql)
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert!(rows > 0);
    let jobs = wait_for(&addr, &format!("{base}/jobs"), |j| {
        j[0]["status"] == "SUCCEEDED"
            && j[0]["description"]
                .as_str()
                .is_some_and(|d| d.contains(sql))
    });
    let job = &jobs[0];
    let job_id = job["jobId"].as_u64().expect("jobId");
    let stage_ids: Vec<u64> = job["stageIds"]
        .as_array()
        .expect("stageIds")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(stage_ids.len() >= 2, "a map and a reduce stage: {job}");
    let stages = get(&addr, &format!("{base}/stages"));
    let mine: Vec<&Value> = stages
        .as_array()
        .expect("stages")
        .iter()
        .filter(|s| s["jobId"].as_u64() == Some(job_id))
        .collect();
    assert_eq!(mine.len(), stage_ids.len());
    let tasks: u64 = mine.iter().map(|s| s["numTasks"].as_u64().unwrap()).sum();
    assert_eq!(job["numTasks"].as_u64(), Some(tasks));
    assert_eq!(job["numCompletedTasks"].as_u64(), Some(tasks));
    let map = mine
        .iter()
        .find(|s| s["shuffleMapStage"] == true)
        .expect("a shuffle map stage");
    assert!(map["shuffleWriteBytes"].as_u64().unwrap() > 0, "{map}");
    assert_eq!(map["status"], "COMPLETE");
    let reduce = mine
        .iter()
        .find(|s| {
            s["parentDatasetIds"]
                .as_array()
                .is_some_and(|p| p.contains(&map["datasetId"]))
        })
        .expect("a stage reads the shuffle");
    assert_eq!(
        reduce["outputRecords"].as_u64(),
        Some(rows as u64),
        "the last stage's rows are the answer's: {reduce}"
    );
    let map_id = map["stageId"].as_u64().unwrap();
    let summary = get(
        &addr,
        &format!("{base}/stages/{map_id}/0/taskSummary?quantiles=0,0.5,1"),
    );
    assert_eq!(summary["quantiles"].as_array().map(Vec::len), Some(3));
    let writes = summary["shuffleWriteMetrics"]["writeBytes"]
        .as_array()
        .unwrap();
    assert_eq!(writes.len(), 3);
    assert!(writes[0].as_f64() <= writes[2].as_f64());
    let list = get(
        &addr,
        &format!("{base}/stages/{map_id}/0/taskList?length=100"),
    );
    assert_eq!(
        list.as_array().map(Vec::len) as Option<usize>,
        map["numTasks"].as_u64().map(|n| n as usize)
    );
    assert!(
        list[0]["taskMetrics"]["shuffleWriteMetrics"]["bytesWritten"]
            .as_u64()
            .is_some()
    );
    let (status, text) = request(
        &addr,
        "GET",
        &format!("{base}/stages/{map_id}/0/taskSummary?quantiles=2"),
        None,
    );
    assert_eq!(status, 400, "{text}");
    let (status, _) = request(&addr, "GET", &format!("{base}/jobs/999999"), None);
    assert_eq!(status, 404);

    // The SQL tab: the text, Ember's stage plan, the stage graph with figures.
    let query = get(&addr, &format!("{base}/sql/{job_id}"));
    assert!(
        query["planDescription"]
            .as_str()
            .unwrap()
            .contains("Ember stages"),
        "{query}"
    );
    assert_eq!(
        query["nodes"].as_array().map(Vec::len),
        Some(stage_ids.len())
    );
    assert!(!query["edges"].as_array().unwrap().is_empty(), "{query}");
    // The DAG as SVG, a box per stage.
    let (status, svg) = request(&addr, "GET", &format!("{base}/jobs/{job_id}/dag.svg"), None);
    assert_eq!(status, 200);
    assert!(svg.contains("<svg"), "{svg}");
    for id in &stage_ids {
        assert!(svg.contains(&format!("Stage {id}")), "stage {id} in {svg}");
    }

    // Executors: two, active, with their memory limits.
    let executors = get(&addr, &format!("{base}/executors"));
    assert_eq!(executors.as_array().map(Vec::len), Some(2), "{executors}");
    for e in executors.as_array().unwrap() {
        assert_eq!(e["isActive"], true);
        assert!(e["maxMemory"].as_u64().unwrap() > 0);
        assert!(e["completedTasks"].as_u64().unwrap() > 0 || e["totalTasks"].as_u64().is_some());
    }

    // A cached dataset appears under storage with every partition, and leaves on unpersist.
    let cached = cached_sql(&session, "SELECT * FROM orders WHERE amount > 10").await;
    let storage = wait_for(&addr, &format!("{base}/storage/rdd"), |s| {
        s.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["numCachedPartitions"] == a[0]["numPartitions"])
    });
    let dataset = storage[0]["id"].as_u64().unwrap();
    let detail = get(&addr, &format!("{base}/storage/rdd/{dataset}"));
    let held: u64 = detail["dataDistribution"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["partitions"].as_u64().unwrap())
        .sum();
    assert_eq!(Some(held), storage[0]["numPartitions"].as_u64());
    assert!(storage[0]["memoryUsed"].as_u64().unwrap() > 0);
    let _uncached = cached.unpersist().await.expect("unpersist");
    wait_for(&addr, &format!("{base}/storage/rdd"), |s| {
        s.as_array().is_some_and(Vec::is_empty)
    });

    // A failed job shows its error.
    let failing = session
        .sql("SELECT CAST(region AS INT) FROM orders")
        .await
        .expect("plans");
    let error = failing
        .collect()
        .await
        .expect_err("region names are no integers");
    let jobs = wait_for(&addr, &format!("{base}/jobs?status=failed"), |j| {
        j.as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(jobs[0]["emberStatus"], "FAILED");
    let shown = jobs[0]["error"].as_str().expect("error text");
    assert!(shown.to_lowercase().contains("cast"), "{shown} / {error}");

    // An mllib training run: the objective at each pass, then its iterations.
    Pipeline::new()
        .estimator(StringIndexer::new("species", "label"))
        .transformer(VectorAssembler::new(IRIS_INPUTS))
        .estimator(LogisticRegression::new().reg_param(0.01))
        .fit(&iris(&session).await)
        .await
        .expect("fit");
    let runs = wait_for(&addr, &format!("{base}/ml"), |r| {
        r[0]["status"] == "FINISHED"
            && r[0]["passObjectives"]
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_f64))
    });
    let run = &runs[0];
    assert_eq!(run["algorithm"], "LogisticRegression");
    assert_eq!(run["rows"], 150);
    let objectives: Vec<f64> = run["passObjectives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().expect("every pass reported"))
        .collect();
    assert!(objectives.len() >= 2, "{run}");
    assert!(
        objectives.last() < objectives.first(),
        "training lowers the objective: {run}"
    );
    let iterations = run["iterations"].as_u64().expect("iterations");
    assert_eq!(
        run["objectiveHistory"].as_array().map(|a| a.len() as u64),
        Some(iterations + 1),
        "{run}"
    );
    let (status, chart) = request(
        &addr,
        "GET",
        &format!("{base}/ml/{}/objective.svg", run["run"]),
        None,
    );
    assert_eq!(status, 200);
    assert!(chart.contains("<polyline"), "{chart}");

    // A killed executor shows as lost, with the reason.
    let victim = session.kill_executor(0).expect("kill");
    let all = wait_for(&addr, &format!("{base}/allexecutors"), |e| {
        e.as_array().is_some_and(|a| {
            a.iter()
                .any(|e| e["id"] == victim.as_str() && e["isActive"] == false)
        })
    });
    let lost = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == victim.as_str())
        .unwrap();
    assert!(
        !lost["removeReason"].as_str().unwrap_or("").is_empty(),
        "{lost}"
    );
    let active = get(&addr, &format!("{base}/executors"));
    assert_eq!(active.as_array().map(Vec::len), Some(1));

    // Metrics for machines.
    let (status, metrics) = request(&addr, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("ember_jobs_total{status=\"succeeded\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ember_jobs_total{status=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ember_executors_alive 1"), "{metrics}");
    assert!(
        metrics.contains("ember_executors_lost_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ember_task_duration_seconds_bucket"),
        "{metrics}"
    );

    // The history server replays the log into the same jobs.
    let live_jobs = get(&addr, &format!("{base}/jobs"));
    let history = ember::ui::serve_history(logs.path().to_path_buf(), &UiConfig::port(0))
        .await
        .expect("history server");
    let haddr = address_of(&history.url());
    let apps = get(&haddr, "/api/v1/applications");
    assert_eq!(apps[0]["id"], app_id.as_str());
    let replayed = get(&haddr, &format!("{base}/jobs"));
    let ids = |v: &Value| -> Vec<(u64, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|j| {
                (
                    j["jobId"].as_u64().unwrap(),
                    j["emberStatus"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(ids(&replayed), ids(&live_jobs));
    assert_eq!(
        get(&haddr, &format!("{base}/ml"))[0]["passObjectives"],
        run["passObjectives"],
        "the training run replays"
    );
    let replayed_job = get(&haddr, &format!("{base}/jobs/{job_id}"));
    assert_eq!(replayed_job["numTasks"], job["numTasks"]);
    let (status, svg) = request(
        &haddr,
        "GET",
        &format!("{base}/jobs/{job_id}/dag.svg"),
        None,
    );
    assert_eq!(status, 200);
    assert!(svg.contains(&format!("Stage {}", stage_ids[0])));
    let (status, _) = request(&haddr, "GET", "/api/v1/applications/no-such-app/jobs", None);
    assert_eq!(status, 404);
}
