//! The web UI in a real headless Chromium: every page is loaded while a job runs and after
//! it, its rendered DOM checked for what a user looks for (the job row and its status,
//! stage quantiles, the DAG's SVG boxes, executors' memory, cached data, the SQL plan, a
//! training run's chart),
//! and a screenshot of each saved under the test's output directory
//! (`target/tmp/ui-screenshots/`). `.ci/run` installs Debian's `chromium`; elsewhere the
//! test is skipped with a message when no Chromium is found (in CI it fails instead).

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::http::{address_of, json_request};
use crate::common::{builder, cached_sql, iris, orders_session, Mode, IRIS_INPUTS};
use ember::ml::*;
use ember::ui::UiConfig;

/// The Chromium binary on PATH.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `url` with `args` (after the page's scripts had `budget_ms` of
/// virtual time) and returns its stdout.
async fn chromium_run(chrome: &Path, profile: &Path, url: &str, args: &[String]) -> String {
    let mut cmd = tokio::process::Command::new(chrome);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=3000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(url)
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("chromium on {url} took over 60 s"))
        .expect("chromium starts");
    assert!(
        out.status.success(),
        "chromium on {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM of `url` once its scripts ran.
async fn dom(chrome: &Path, profile: &Path, url: &str) -> String {
    let dom = chromium_run(chrome, profile, url, &["--dump-dom".to_string()]).await;
    assert!(
        dom.contains("data-rendered"),
        "the page never finished drawing: {url}\n{dom}"
    );
    dom
}

/// Saves a screenshot of `url` as `<dir>/<name>.png`.
async fn screenshot(chrome: &Path, profile: &Path, url: &str, dir: &Path, name: &str) {
    let file = dir.join(format!("{name}.png"));
    chromium_run(
        chrome,
        profile,
        url,
        &[
            format!("--screenshot={}", file.display()),
            "--window-size=1400,1000".to_string(),
        ],
    )
    .await;
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(size > 1000, "{} is {size} bytes", file.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_what_a_user_looks_for_in_chromium() {
    let Some(chrome) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is required in CI (.ci/run installs Debian's chromium)"
        );
        eprintln!("skipped: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let profile = tempfile::tempdir().expect("tmp");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&shots).expect("mkdir");
    // Executor 0 waits before each task, so a job stays running while pages load.
    let slow = builder(2)
        .ui(UiConfig::port(0))
        .inject_task_delay(0, Duration::from_millis(3000));
    let (_data, session) = orders_session(Mode::Processes, slow, 2, 2_000).await;
    let url = session.ui_url().expect("the UI runs");
    let addr = address_of(&url);
    let app = session.driver().app_id().to_string();
    let page = |route: &str| format!("{url}#/{app}/{route}");

    // While a job runs: its row says RUNNING.
    let running = {
        let s = session.clone();
        tokio::spawn(async move {
            common::run_sql(
                &s,
                "SELECT region, count(*) AS n, sum(amount) AS total FROM orders GROUP BY region",
            )
            .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, jobs) = json_request(
            &addr,
            "GET",
            &format!("/api/v1/applications/{app}/jobs"),
            None,
        );
        if jobs[0]["status"] == "RUNNING" {
            break;
        }
        assert!(Instant::now() < deadline, "no job ever ran: {jobs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let live = dom(&chrome, profile.path(), &page("jobs")).await;
    assert!(live.contains(r#"class="job""#), "{live}");
    assert!(
        live.contains("status-RUNNING"),
        "the running job shows as running: {live}"
    );
    screenshot(
        &chrome,
        profile.path(),
        &page("jobs"),
        &shots,
        "jobs-running",
    )
    .await;
    let rows = running.await.expect("job task");
    assert!(!rows.is_empty());

    // A cached dataset for the storage page.
    let _cached = cached_sql(&session, "SELECT * FROM orders WHERE amount < 5").await;

    // A k-means training run for the ML page.
    let features = VectorAssembler::new(IRIS_INPUTS)
        .transform(&iris(&session).await)
        .expect("assemble");
    KMeans::new().k(3).fit(&features).await.expect("k-means");

    // After it: every page.
    let (_, jobs) = json_request(
        &addr,
        "GET",
        &format!("/api/v1/applications/{app}/jobs"),
        None,
    );
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| {
            j["description"]
                .as_str()
                .is_some_and(|d| d.contains("GROUP BY region"))
        })
        .expect("the query's job")
        .clone();
    let job_id = job["jobId"].as_u64().unwrap();
    let stage_ids: Vec<u64> = job["stageIds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();

    let jobs_page = dom(&chrome, profile.path(), &page("jobs")).await;
    assert!(
        jobs_page.contains(&format!(r#"data-job="{job_id}""#)),
        "{jobs_page}"
    );
    assert!(jobs_page.contains("status-SUCCEEDED"), "{jobs_page}");
    screenshot(&chrome, profile.path(), &page("jobs"), &shots, "jobs").await;

    let job_page = dom(&chrome, profile.path(), &page(&format!("jobs/{job_id}"))).await;
    let dag = job_page
        .split(r#"id="dag""#)
        .nth(1)
        .expect("the job page has a DAG");
    assert!(dag.contains("<svg"), "the DAG is drawn as SVG: {job_page}");
    for id in &stage_ids {
        assert!(
            dag.contains(&format!("Stage {id}")),
            "stage {id} is a box of the DAG"
        );
    }
    screenshot(
        &chrome,
        profile.path(),
        &page(&format!("jobs/{job_id}")),
        &shots,
        "job-dag",
    )
    .await;

    let stages_page = dom(&chrome, profile.path(), &page("stages")).await;
    for id in &stage_ids {
        assert!(
            stages_page.contains(&format!(r#"data-stage="{id}""#)),
            "{stages_page}"
        );
    }
    screenshot(&chrome, profile.path(), &page("stages"), &shots, "stages").await;

    let stage = stage_ids[0];
    let stage_page = dom(&chrome, profile.path(), &page(&format!("stages/{stage}"))).await;
    assert!(stage_page.contains(r#"id="quantiles""#), "{stage_page}");
    assert!(
        stage_page.contains(r#"data-metric="Duration""#),
        "{stage_page}"
    );
    // Executor 0's tasks waited 3 s, the others did not: the durations are skewed.
    assert!(
        stage_page.contains("(skew)"),
        "the delayed tasks stand out: {stage_page}"
    );
    assert!(stage_page.contains(r#"class="task""#), "{stage_page}");
    screenshot(
        &chrome,
        profile.path(),
        &page(&format!("stages/{stage}")),
        &shots,
        "stage",
    )
    .await;

    let sql_page = dom(&chrome, profile.path(), &page(&format!("sql/{job_id}"))).await;
    assert!(sql_page.contains("GROUP BY region"), "{sql_page}");
    assert!(
        sql_page.contains("Ember stages"),
        "the plan is shown: {sql_page}"
    );
    screenshot(
        &chrome,
        profile.path(),
        &page(&format!("sql/{job_id}")),
        &shots,
        "sql",
    )
    .await;

    let executors_page = dom(&chrome, profile.path(), &page("executors")).await;
    assert_eq!(
        executors_page.matches(r#"class="executor""#).count(),
        2,
        "{executors_page}"
    );
    assert!(
        executors_page.contains("2.0 GiB"),
        "memory limits shown: {executors_page}"
    );
    screenshot(
        &chrome,
        profile.path(),
        &page("executors"),
        &shots,
        "executors",
    )
    .await;

    let storage_page = dom(&chrome, profile.path(), &page("storage")).await;
    assert!(storage_page.contains(r#"class="cached""#), "{storage_page}");
    screenshot(&chrome, profile.path(), &page("storage"), &shots, "storage").await;

    let ml_page = dom(&chrome, profile.path(), &page("ml")).await;
    assert!(ml_page.contains(r#"class="training""#), "{ml_page}");
    assert!(ml_page.contains("KMeans"), "{ml_page}");
    assert!(
        ml_page.contains("<polyline"),
        "the objective is charted: {ml_page}"
    );
    screenshot(&chrome, profile.path(), &page("ml"), &shots, "ml").await;

    let env_page = dom(&chrome, profile.path(), &page("environment")).await;
    assert!(env_page.contains("ember.executor.instances"), "{env_page}");
    screenshot(
        &chrome,
        profile.path(),
        &page("environment"),
        &shots,
        "environment",
    )
    .await;
    eprintln!("screenshots in {}", shots.display());
}
