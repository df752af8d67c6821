//! Who may call an Ember cluster: a shared secret on every RPC of the driver, the
//! executors and the Spark Connect endpoint, TLS (mutual as an option) with certificates
//! made by the test, servers that refuse to leave loopback unprotected, and executor ids
//! that cannot be taken over. Everything here runs on loopback; `tests/it/multihost.rs`
//! spans network namespaces.

use crate::common;
use crate::common::certs;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ConnectServer, Mode};
use ember::engine::proto::driver_service_client::DriverServiceClient;
use ember::engine::proto::executor_service_client::ExecutorServiceClient;
use ember::engine::proto::{RegisterExecutorRequest, StatusRequest};
use ember::engine::rpc;
use ember::engine::security::{Secret, Security, TlsSettings};

const QUERY: &str = "SELECT region, COUNT(*) AS n, SUM(amount) AS total FROM orders \
                     GROUP BY region ORDER BY region";

/// A driver call by a stranger described by `security`: its gRPC code, or `None` when
/// no call got through at all (the TLS handshake failed).
async fn register_as(security: &Security, address: &str) -> Result<(), Option<tonic::Code>> {
    let channel = rpc::channel(address, security).expect("channel");
    let mut client = DriverServiceClient::new(channel);
    let request = RegisterExecutorRequest {
        executor_id: "intruder".into(),
        address: "127.0.0.1:1".into(),
        cores: 1,
        memory_bytes: 1,
        pid: 1,
        device: "cpu".into(),
    };
    match tokio::time::timeout(Duration::from_secs(10), client.register_executor(request)).await {
        Ok(Ok(_)) => Ok(()),
        // The connection failed below gRPC (a refused handshake, a TLS server spoken to
        // in plain text): no call reached a service.
        Ok(Err(status))
            if matches!(
                status.code(),
                tonic::Code::Unknown
                    | tonic::Code::Unavailable
                    | tonic::Code::Internal
                    | tonic::Code::Cancelled
            ) =>
        {
            Err(None)
        }
        Ok(Err(status)) => Err(Some(status.code())),
        Err(_) => Err(None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_mutual_tls_with_a_secret_answers_and_refuses_strangers() {
    let pki = certs::TestPki::new();
    let files = pki.issue("host", &["localhost", "127.0.0.1"]);
    let secret = certs::test_secret();
    let security = certs::secured(&secret, files.clone(), true);
    let builder = common::builder(2).security(security.clone());
    let (dir, session) = common::orders_session(Mode::Processes, builder, 4, 3000).await;
    let answer = common::run_sql(&session, QUERY).await;
    let expected = common::datafusion_answer(dir.path(), QUERY).await;
    assert_eq!(
        common::sorted_rows(&answer),
        common::sorted_rows(&expected),
        "the shuffled aggregate over TLS matches DataFusion"
    );
    let cached = session.read_parquet(dir.path()).await.expect("read");
    let cached = cached.cache().await.expect("cache");
    assert_eq!(cached.count().await.expect("count"), 12_000);

    let driver = session.driver().advertised_address().to_string();
    assert!(driver.starts_with("127.0.0.1:"), "{driver}");
    // Plain text to a TLS server: no call gets through.
    let plain = Security {
        secret: Some(secret.clone()),
        ..Security::none()
    };
    assert_eq!(register_as(&plain, &driver).await, Err(None));
    // TLS that trusts the CA but shows no certificate: refused in the handshake.
    let no_cert = Security {
        secret: Some(secret.clone()),
        tls: Some(TlsSettings::load(files.clone(), false).expect("tls")),
        allow_insecure: false,
    };
    assert_eq!(register_as(&no_cert, &driver).await, Err(None));
    // A certificate the CA signed, but no secret, or another one: UNAUTHENTICATED.
    let no_secret = Security {
        secret: None,
        ..security.clone()
    };
    assert_eq!(
        register_as(&no_secret, &driver).await,
        Err(Some(tonic::Code::Unauthenticated))
    );
    let wrong = Security {
        secret: Some(Secret::new(b"not the cluster's secret at all").expect("secret")),
        ..security.clone()
    };
    assert_eq!(
        register_as(&wrong, &driver).await,
        Err(Some(tonic::Code::Unauthenticated))
    );
    // The executors refuse the same stranger.
    for executor in session.executors() {
        let channel = rpc::channel(&executor.address, &no_secret).expect("channel");
        let status = ExecutorServiceClient::new(channel)
            .status(StatusRequest {
                reset_peak_rss: false,
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
        // With the secret it answers.
        let channel = rpc::channel(&executor.address, &security).expect("channel");
        ExecutorServiceClient::new(channel)
            .status(StatusRequest {
                reset_peak_rss: false,
            })
            .await
            .expect("status with the secret");
    }
    assert_eq!(session.executors().len(), 2, "no intruder registered");
    // Cached data is intact after the refusals.
    assert_eq!(cached.count().await.expect("count"), 12_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_clusters_get_a_secret_of_their_own() {
    let session = common::start(Mode::InProcess, common::builder(1)).await;
    assert!(
        session.driver().security().secret.is_some(),
        "a local cluster is never open to other local users"
    );
    let driver = session.driver().advertised_address().to_string();
    assert_eq!(
        register_as(&Security::none(), &driver).await,
        Err(Some(tonic::Code::Unauthenticated))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_executors_id_cannot_be_taken() {
    let session = common::start(Mode::InProcess, common::builder(1)).await;
    let taken = session.executors()[0].id.0.clone();
    let err = ember::executor::start(ember::executor::ExecutorConfig {
        driver: session.driver().advertised_address().to_string(),
        bind: "127.0.0.1:0".parse().expect("addr"),
        memory_bytes: 64 << 20,
        cores: 1,
        id: Some(taken.clone()),
        register_timeout: Duration::from_secs(5),
        hooks: Default::default(),
        driver_timeout: ember::executor::DEFAULT_DRIVER_TIMEOUT,
        task_delay: None,
        advertise: None,
        security: session.driver().security().clone(),
        share_dir: None,
    })
    .await
    .expect_err("the id belongs to a live executor");
    let text = err.to_string();
    assert!(
        text.contains(&taken) && text.contains("live executor"),
        "{text}"
    );
    assert_eq!(session.executors().len(), 1);
    let batches = common::run_sql(&session, "SELECT 41 + 1 AS answer").await;
    assert_eq!(
        common::row_count(&batches),
        1,
        "the real executor still works"
    );
}

/// Runs `cmd` (expected to fail at once) and returns its stderr.
fn failure_output(mut cmd: Command) -> String {
    let output = cmd
        .env_remove(ember::engine::security::SECRET_ENV)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    assert!(!output.status.success(), "it refused to start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_beyond_loopback_need_a_secret_or_insecure() {
    let mut executor = Command::new(env!("CARGO_BIN_EXE_ember-executor"));
    executor.args(["--driver", "127.0.0.1:9", "--bind", "0.0.0.0:0"]);
    let text = failure_output(executor);
    assert!(
        text.contains("without a secret") && text.contains("--insecure"),
        "{text}"
    );
    // With consent it gets as far as the (absent) driver.
    let mut executor = Command::new(env!("CARGO_BIN_EXE_ember-executor"));
    executor.args([
        "--driver",
        "127.0.0.1:9",
        "--bind",
        "0.0.0.0:0",
        "--insecure",
        "--device",
        "cpu",
    ]);
    let text = failure_output(executor);
    assert!(
        text.contains("127.0.0.1:9") && !text.contains("without a secret"),
        "{text}"
    );
    let mut server = common::ember_command(env!("CARGO_BIN_EXE_ember"));
    server.args(["server", "--bind", "0.0.0.0", "--port", "0"]);
    let text = failure_output(server);
    assert!(text.contains("Spark Connect endpoint"), "{text}");
    let Err(err) = ember::driver::DriverHandle::start(
        "0.0.0.0:0".parse().expect("addr"),
        ember::driver::DriverConfig::default(),
    )
    .await
    else {
        panic!("a driver on a wildcard address without a secret was started")
    };
    assert!(err.to_string().contains("--insecure"), "{err}");
    // A short secret, an unreadable one and a missing certificate say what is wrong.
    let mut short = Command::new(env!("CARGO_BIN_EXE_ember-executor"));
    short
        .args(["--driver", "127.0.0.1:9"])
        .env(ember::engine::security::SECRET_ENV, "short");
    let output = short.stdin(Stdio::null()).output().expect("runs");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("EMBER_SECRET") && text.contains("at least 16"),
        "{text}"
    );
    let mut missing = Command::new(env!("CARGO_BIN_EXE_ember-executor"));
    missing.args([
        "--driver",
        "127.0.0.1:9",
        "--secret-file",
        "/nonexistent/ember-secret",
    ]);
    let text = failure_output(missing);
    assert!(text.contains("/nonexistent/ember-secret"), "{text}");
    let mut no_pem = Command::new(env!("CARGO_BIN_EXE_ember-executor"));
    let not_pem = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(not_pem.path(), "hello").expect("write");
    let not_pem = not_pem.path().to_string_lossy().into_owned();
    no_pem.args([
        "--driver",
        "127.0.0.1:9",
        "--tls-cert",
        &not_pem,
        "--tls-key",
        &not_pem,
        "--tls-ca",
        &not_pem,
    ]);
    let text = failure_output(no_pem);
    assert!(text.contains("not a PEM file"), "{text}");
    // An address peers cannot dial is refused.
    let mut wildcard = Command::new(env!("CARGO_BIN_EXE_ember-executor"));
    wildcard.args(["--driver", "127.0.0.1:9", "--advertise", "0.0.0.0"]);
    let text = failure_output(wildcard);
    assert!(
        text.contains("--advertise") && text.contains("wildcard"),
        "{text}"
    );
}

/// `ember server` on a free port with `secret`, started as [`ConnectServer::start`] does.
fn secured_server(secret: &Secret, extra: &[&str]) -> ConnectServer {
    let secret = String::from_utf8_lossy(secret.expose()).into_owned();
    let mut args = vec!["--memory", "256MiB"];
    args.extend_from_slice(extra);
    ConnectServer::start(
        &args,
        &[(ember::engine::security::SECRET_ENV, secret.as_str())],
    )
}

/// A Spark Connect `Config` call (get all) with an optional Bearer token.
async fn config_call(
    channel: tonic::transport::Channel,
    token: Option<&str>,
) -> Result<(), tonic::Status> {
    use ember::connect::proto::{config_request, ConfigRequest, ConfigResponse};
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(ConfigRequest {
        session_id: "00000000-0000-4000-8000-000000000001".into(),
        operation: Some(config_request::Operation {
            op_type: Some(config_request::operation::OpType::GetAll(
                config_request::GetAll { prefix: None },
            )),
        }),
        ..Default::default()
    });
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    let codec = tonic_prost::ProstCodec::<ConfigRequest, ConfigResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/spark.connect.SparkConnectService/Config",
    );
    grpc.unary(request, path, codec).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_connect_clients_need_the_token() {
    let secret = certs::test_secret();
    let token = String::from_utf8_lossy(secret.expose()).into_owned();
    let server = secured_server(&secret, &[]);
    assert!(
        server.url.starts_with("sc://localhost:"),
        "PySpark sends tokens in plain text only to localhost: {}",
        server.url
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.authority()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let refused = config_call(channel.clone(), None)
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    assert!(refused.message().contains("token"), "{refused}");
    let wrong = config_call(channel.clone(), Some("wrong-token-of-some-length"))
        .await
        .expect_err("wrong token");
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong}");
    config_call(channel, Some(&token))
        .await
        .expect("the right token is served");

    // Over TLS: the client trusts the test's CA.
    let pki = certs::TestPki::new();
    let files = pki.issue("server", &["localhost", "127.0.0.1"]);
    let (cert, key, ca) = (
        files.cert.to_string_lossy().into_owned(),
        files.key.to_string_lossy().into_owned(),
        files.ca.to_string_lossy().into_owned(),
    );
    let server = secured_server(
        &secret,
        &["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca],
    );
    let ca_pem = std::fs::read(&files.ca).expect("ca");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://{}", server.authority()))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls")
            .connect()
            .await
            .expect("TLS handshake");
    config_call(channel.clone(), Some(&token))
        .await
        .expect("served over TLS");
    let refused = config_call(channel, None).await.expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", server.authority()))
        .expect("endpoint")
        .connect()
        .await;
    if let Ok(plain) = plain {
        assert!(
            config_call(plain, Some(&token)).await.is_err(),
            "plain text is not served by a TLS endpoint"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_runs_no_more_tasks_than_it_has_slots() {
    use ember::engine::proto::LaunchTaskRequest;
    let driver = ember::driver::DriverHandle::start(
        "127.0.0.1:0".parse().expect("addr"),
        ember::driver::DriverConfig::default(),
    )
    .await
    .expect("driver");
    // One slot; every task sleeps 3 s before it starts (and then fails: its plan is junk).
    let executor = ember::executor::start(ember::executor::ExecutorConfig {
        driver: driver.advertised_address().to_string(),
        bind: "127.0.0.1:0".parse().expect("addr"),
        memory_bytes: 64 << 20,
        cores: 1,
        id: Some("one-slot".into()),
        register_timeout: Duration::from_secs(5),
        hooks: Default::default(),
        driver_timeout: ember::executor::DEFAULT_DRIVER_TIMEOUT,
        task_delay: Some(Duration::from_secs(3)),
        advertise: None,
        security: Security::none(),
        share_dir: None,
    })
    .await
    .expect("executor");
    let channel = rpc::channel(executor.advertised_address(), &Security::none()).expect("channel");
    let mut client = ExecutorServiceClient::new(channel);
    let task = |task_id: u64| LaunchTaskRequest {
        task_id,
        plan: vec![1, 2, 3].into(),
        ..Default::default()
    };
    let started = Instant::now();
    client
        .launch_task(task(1))
        .await
        .expect("the first task takes the slot");
    // A caller that believes there are more slots is refused once the wait runs out.
    let refused = client.launch_task(task(2)).await.expect_err("no slot");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("task slots"), "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refused before the slot freed"
    );
    // Once the first task ends the slot is taken again at once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.launch_task(task(3)).await.expect("the freed slot");
}
