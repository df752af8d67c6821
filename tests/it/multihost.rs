//! A cluster across hosts: the driver (this test process, on a bridge in the root network
//! namespace) and two executor processes, each in a Linux network namespace of its own
//! with its own address and spill directory, joined by a bridge. Every call carries the
//! shared secret and runs over mutual TLS. A shuffle-heavy TPC-H query and a cached
//! DataFrame answer right; then one executor's link goes down in the middle of a job and
//! the job still answers right by recomputation; an executor with the wrong secret and a
//! caller without one are refused.
//!
//! Needs root (CI runs as root) to make namespaces; elsewhere it says why it skipped.

use crate::common;
use crate::common::certs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use datafusion::prelude::SessionContext;
use ember::engine::proto::driver_service_client::DriverServiceClient;
use ember::engine::proto::RegisterExecutorRequest;
use ember::engine::rpc;
use ember::engine::security::{Secret, Security, SECRET_ENV};
use ember::prelude::*;
use ember::tpch;

/// Runs `ip` with `args`; the error carries its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A bridge in the root namespace with an address of its own, and one namespace per host
/// joined to it by a veth pair; all removed when dropped.
struct Network {
    bridge: String,
    namespaces: Vec<String>,
    /// The bridge's address (the driver's host).
    driver_ip: String,
    /// Each namespace's address.
    host_ips: Vec<String>,
    /// The root-namespace end of each host's veth pair.
    links: Vec<String>,
}

impl Network {
    /// Makes the network, or says why it cannot be made here.
    fn create(hosts: usize) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: network namespaces need CAP_SYS_ADMIN".into());
        }
        let tag = format!("{:x}", std::process::id() % 0xffffff);
        let subnet = format!(
            "10.{}.{}",
            100 + std::process::id() % 100,
            (std::process::id() / 100) % 250
        );
        let mut net = Network {
            bridge: format!("emb{tag}"),
            namespaces: Vec::new(),
            driver_ip: format!("{subnet}.1"),
            host_ips: Vec::new(),
            links: Vec::new(),
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.driver_ip),
            "dev",
            &net.bridge,
        ])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        for i in 0..hosts {
            let ns = format!("ember-{tag}-{i}");
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let outer = format!("emo{tag}{i}");
            let inner = format!("emi{tag}{i}");
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            net.links.push(outer.clone());
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "master", &net.bridge])?;
            ip(&["link", "set", &outer, "up"])?;
            let address = format!("{subnet}.{}", 11 + i);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            net.host_ips.push(address);
        }
        Ok(net)
    }

    /// Cuts host `i` off the network (its cable pulled).
    fn unplug(&self, i: usize) {
        ip(&["link", "set", &self.links[i], "down"]).expect("link down");
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            // Removing a namespace removes the veth end inside it, and so the pair.
            let _ = ip(&["netns", "del", ns]);
        }
        for link in &self.links {
            let _ = ip(&["link", "del", link]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// An executor process in a namespace, killed when dropped.
struct Remote {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ember-executor` in namespace `ns`, bound to every address there (so it must
/// find the address to advertise on its own), with `secret`, mutual TLS from `tls` and
/// its own temporary (spill) directory under `scratch`.
fn start_executor(
    ns: &str,
    id: &str,
    driver: &str,
    secret: &Secret,
    tls: &ember::engine::security::TlsFiles,
    scratch: &Path,
    extra: &[&str],
) -> Remote {
    let tmp = scratch.join(format!("tmp-{id}"));
    std::fs::create_dir_all(&tmp).expect("tmp dir");
    let stderr = scratch.join(format!("{id}.log"));
    let child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_ember-executor")])
        .args([
            "--driver",
            driver,
            "--bind",
            "0.0.0.0:0",
            "--id",
            id,
            "--cores",
            "1",
            "--memory",
            "512MiB",
            "--device",
            "cpu",
        ])
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key)
        .arg("--tls-ca")
        .arg(&tls.ca)
        .arg("--tls-mutual")
        .args(extra)
        .env(
            SECRET_ENV,
            String::from_utf8_lossy(secret.expose()).as_ref(),
        )
        .env("TMPDIR", &tmp)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("log file"))
        .spawn()
        .expect("starts ember-executor in its namespace");
    Remote { child, stderr }
}

/// A free port on `ip` (the test's own subnet: nothing else takes it in between).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_spans_namespaces_with_a_secret_and_tls_and_survives_losing_a_host() {
    let net = match Network::create(2) {
        Ok(net) => net,
        Err(why) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI must run the multi-host test: {why}");
            }
            eprintln!("SKIPPED multi-host test: {why}");
            return;
        }
    };
    let scratch = tempfile::tempdir().expect("scratch");
    let data = scratch.path().join("tpch");
    let out = data.clone();
    tokio::task::spawn_blocking(move || tpch::generate(0.01, &out, 6))
        .await
        .expect("generator")
        .expect("SF 0.01");

    let pki = certs::TestPki::new();
    let secret = certs::test_secret();
    let driver_tls = pki.issue("driver", &[&net.driver_ip]);
    let driver_address = format!("{}:{}", net.driver_ip, free_port(&net.driver_ip));
    let mut executors = Vec::new();
    for (i, ns) in net.namespaces.iter().enumerate() {
        let tls = pki.issue(&format!("host{i}"), &[&net.host_ips[i]]);
        // The second host's tasks take a while, so it is surely busy when unplugged.
        let extra: &[&str] = if i == 1 {
            &["--inject-task-delay-ms", "150"]
        } else {
            &[]
        };
        executors.push(start_executor(
            ns,
            &format!("host{i}"),
            &driver_address,
            &secret,
            &tls,
            scratch.path(),
            extra,
        ));
    }
    let security = certs::secured(&secret, driver_tls.clone(), true);
    let session = Session::builder()
        .executors(2)
        .driver_config(ember::driver::DriverConfig {
            security: security.clone(),
            ..common::fast_driver()
        })
        .standalone(driver_address.parse().expect("addr"))
        .await
        .unwrap_or_else(|e| {
            let logs: Vec<String> = executors
                .iter()
                .map(|r| std::fs::read_to_string(&r.stderr).unwrap_or_default())
                .collect();
            panic!("cluster did not form: {e}; executor logs: {logs:?}")
        });
    // Each executor found its own address on the route to the driver.
    let mut advertised: Vec<String> = session
        .executors()
        .iter()
        .map(|e| e.address.rsplit_once(':').expect("host:port").0.to_string())
        .collect();
    advertised.sort();
    assert_eq!(advertised, net.host_ips, "advertised addresses");

    // A shuffle-heavy query across the hosts, against one-process DataFusion.
    tpch::register(&session, &data).await.expect("register");
    let ctx = SessionContext::new();
    tpch::register_datafusion(&ctx, &data)
        .await
        .expect("register");
    let (answered, failures) = common::answers_against_datafusion(
        &tpch::SUITE,
        &session,
        &ctx,
        [5, 9],
        Duration::from_secs(120),
    )
    .await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(answered.len(), 2);

    // A cached DataFrame with partitions on both hosts (lineitem is six files).
    let lineitem = session
        .sql("SELECT l_orderkey, l_quantity, l_extendedprice FROM lineitem")
        .await
        .expect("plan")
        .cache()
        .await
        .expect("cache");
    let rows = lineitem.count().await.expect("count");
    let query = "SELECT COUNT(*) AS n, SUM(l_quantity) AS q FROM lineitem";
    let expected = common::sorted_rows(
        &ctx.sql(query)
            .await
            .expect("df")
            .collect()
            .await
            .expect("df"),
    );
    assert!(rows > 50_000, "{rows} rows");
    // Both hosts write their partitions into a directory they share with the driver.
    let out = scratch.path().join("written");
    let files = lineitem.write_parquet(&out).await.expect("write_parquet");
    assert!(files.len() >= 2, "{files:?}");
    let back = session.read_parquet(&out).await.expect("read back");
    assert_eq!(back.count().await.expect("count"), rows);

    // An executor that knows another secret is refused and says so.
    let tls = pki.issue("stranger", &[&net.host_ips[0]]);
    let wrong = Secret::new(b"this is not the cluster's secret").expect("secret");
    let mut stranger = start_executor(
        &net.namespaces[0],
        "stranger",
        &driver_address,
        &wrong,
        &tls,
        scratch.path(),
        &[],
    );
    let status = common::exit_within(&mut stranger.child, Duration::from_secs(20)).await;
    assert!(matches!(status, Some(s) if !s.success()), "{status:?}");
    let log = std::fs::read_to_string(&stranger.stderr).expect("log");
    assert!(
        log.contains("Unauthenticated")
            || log.contains("UNAUTHENTICATED")
            || log.contains("refused"),
        "{log}"
    );
    // A caller without the secret (but with a certificate the CA signed) is refused.
    let no_secret = Security {
        secret: None,
        ..security.clone()
    };
    let status =
        DriverServiceClient::new(rpc::channel(&driver_address, &no_secret).expect("channel"))
            .register_executor(RegisterExecutorRequest {
                executor_id: "intruder".into(),
                address: format!("{}:1", net.host_ips[0]),
                cores: 1,
                memory_bytes: 1,
                pid: 1,
                device: "cpu".into(),
            })
            .await
            .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    assert_eq!(session.executors().len(), 2);

    // Unplug the second host in the middle of a job over the cached rows: the job
    // finishes on the first, recomputing what the lost host held.
    let job = {
        let session = session.clone();
        let lineitem = lineitem.clone();
        tokio::spawn(async move {
            session
                .register_dataframe("cached_lineitem", &lineitem)
                .expect("register");
            common::run_sql(
                &session,
                "SELECT COUNT(*) AS n, SUM(l_quantity) AS q FROM cached_lineitem",
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    net.unplug(1);
    let answer = tokio::time::timeout(Duration::from_secs(90), job)
        .await
        .expect("the job finishes after losing a host")
        .expect("job task");
    assert_eq!(
        common::sorted_rows(&answer),
        expected,
        "same answer after the loss"
    );
    let metrics = session.last_job_metrics().expect("metrics");
    assert!(metrics.executors_lost >= 1, "{metrics:?}");
    assert_eq!(session.executors().len(), 1, "the unplugged host is lost");
    // And again, on the one host left.
    assert_eq!(lineitem.count().await.expect("count"), rows);
    drop(executors);
}
