//! The container image recipe and the Kubernetes manifests agree with the binaries: every
//! container's arguments parse with the real command lines, ports, probes and Services
//! line up with the flags, every process gets the secret from the one Secret, executors
//! fit their memory limits, and the image runs as a non-root user.

use std::collections::BTreeMap;
use std::path::Path;

use clap::Parser;
use serde::Deserialize;
use serde_norway::Value as Yaml;

/// Every document of every manifest, by `kind/name`.
fn manifests() -> BTreeMap<String, Yaml> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut docs = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/kubernetes") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let doc = Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let kind = doc["kind"].as_str().expect("kind").to_string();
            let name = doc["metadata"]["name"].as_str().expect("name").to_string();
            assert!(
                docs.insert(format!("{kind}/{name}"), doc).is_none(),
                "{kind}/{name} twice"
            );
        }
    }
    docs
}

fn strings(yaml: &Yaml) -> Vec<String> {
    yaml.as_sequence()
        .expect("a list")
        .iter()
        .map(|v| match v {
            Yaml::String(s) => s.clone(),
            Yaml::Number(n) => n.to_string(),
            other => panic!("not a string: {other:?}"),
        })
        .collect()
}

/// The one container of a Deployment.
fn container<'a>(docs: &'a BTreeMap<String, Yaml>, deployment: &str) -> &'a Yaml {
    let d = &docs[&format!("Deployment/{deployment}")];
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1, "{deployment}: one container");
    // The pod template's labels select it.
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    for (k, v) in d["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels")
    {
        assert_eq!(
            &labels[k.as_str().expect("key")],
            v,
            "{deployment}: selector"
        );
    }
    &containers[0]
}

/// The container's arguments with Kubernetes' `$(VAR)` references replaced by samples.
fn args(container: &Yaml) -> Vec<String> {
    strings(&container["args"])
        .into_iter()
        .map(|a| {
            a.replace("$(POD_IP)", "10.1.2.3")
                .replace("$(POD_NAME)", "ember-executor-abc12")
        })
        .collect()
}

/// The container port named `name`.
fn port(container: &Yaml, name: &str) -> i64 {
    container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no port named {name}"))["containerPort"]
        .as_i64()
        .expect("containerPort")
}

/// Every `$(VAR)` an argument uses is set in the container's environment.
fn check_env_references(container: &Yaml) {
    let names: Vec<String> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect();
    for a in strings(&container["args"]) {
        if let Some(start) = a.find("$(") {
            let var = &a[start + 2..a[start..].find(')').expect("closing") + start];
            assert!(names.iter().any(|n| n == var), "$({var}) is not set");
        }
    }
}

/// The Secret name and key the container's EMBER_SECRET comes from.
fn secret_ref(container: &Yaml) -> (String, String) {
    let env = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some(ember::engine::security::SECRET_ENV))
        .expect("EMBER_SECRET is set");
    let r = &env["valueFrom"]["secretKeyRef"];
    (
        r["name"].as_str().expect("secret name").to_string(),
        r["key"].as_str().expect("secret key").to_string(),
    )
}

fn bytes(quantity: &str) -> u64 {
    let (number, unit) = quantity.split_at(
        quantity
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(quantity.len()),
    );
    let n: u64 = number.parse().expect("quantity");
    n * match unit {
        "Gi" => 1 << 30,
        "Mi" => 1 << 20,
        "" => 1,
        other => panic!("unit {other}"),
    }
}

#[test]
fn manifests_agree_with_the_binaries() {
    let docs = manifests();
    let driver = container(&docs, "ember-driver");
    let executor = container(&docs, "ember-executor");
    check_env_references(driver);
    check_env_references(executor);

    // The arguments parse with the real command lines.
    let driver_args = args(driver);
    assert_eq!(driver_args[0], "ember");
    let cli = ember::cli::Cli::try_parse_from(&driver_args).expect("driver arguments parse");
    let ember::cli::Command::Server(server) = cli.command else {
        panic!("the driver runs `ember server`");
    };
    assert!(server.standalone, "executors are pods of their own");
    assert!(!server.security.insecure, "no --insecure");
    let executor_args = args(executor);
    assert_eq!(executor_args[0], "ember-executor");
    let exec = ember::executor_main::ExecutorArgs::try_parse_from(&executor_args)
        .expect("executor arguments parse");
    assert!(!exec.security.insecure, "no --insecure");

    // Ports: the Service exposes what the driver listens on; executors dial it by name.
    assert_eq!(port(driver, "connect"), i64::from(server.port));
    assert_eq!(port(driver, "driver"), i64::from(server.driver_port));
    let service = &docs["Service/ember-driver"];
    let service_ports: Vec<(String, i64)> = service["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["targetPort"].as_str().expect("named target").to_string(),
                p["port"].as_i64().expect("port"),
            )
        })
        .collect();
    assert!(service_ports.contains(&("connect".into(), i64::from(server.port))));
    assert!(service_ports.contains(&("driver".into(), i64::from(server.driver_port))));
    let labels = &docs["Deployment/ember-driver"]["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"].as_mapping().expect("selector") {
        assert_eq!(
            &labels[k.as_str().expect("key")],
            v,
            "the Service selects the driver"
        );
    }
    assert_eq!(
        exec.driver,
        format!("ember-driver:{}", server.driver_port),
        "executors register through the driver's Service"
    );
    assert_eq!(
        port(executor, "executor"),
        i64::from(exec.bind.port()),
        "the executor's port is declared"
    );
    assert!(exec.bind.ip().is_unspecified() && exec.advertise.is_some());
    // Probes hit the health endpoint the executor serves.
    let health = exec.health_bind.expect("--health-bind");
    assert_eq!(port(executor, "health"), i64::from(health.port()));
    assert_eq!(
        executor["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        executor["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(executor[probe]["httpGet"]["port"].as_str(), Some("health"));
        let port_name = driver[probe]["tcpSocket"]["port"].as_str().expect("port");
        port(driver, port_name);
    }

    // One Secret for every process, and the key they read exists.
    let secret = &docs["Secret/ember-secret"];
    for c in [driver, executor] {
        let (name, key) = secret_ref(c);
        assert_eq!(format!("Secret/{name}"), "Secret/ember-secret");
        assert!(!secret["stringData"][key.as_str()].is_null(), "key {key}");
    }
    // The placeholder cannot run: Ember refuses it as too short.
    let placeholder = secret["stringData"]["secret"].as_str().expect("value");
    assert!(ember::engine::security::Secret::new(placeholder.as_bytes()).is_err());

    // An executor's memory limit holds its --memory plus the process's overhead.
    let limit = bytes(
        executor["resources"]["limits"]["memory"]
            .as_str()
            .expect("limit"),
    );
    assert!(
        exec.memory as u64 + ember::executor::PROCESS_OVERHEAD_BYTES as u64 <= limit,
        "--memory {} + overhead exceeds the {limit}-byte limit",
        exec.memory
    );
    // Both run the same image, not as root, with the spill directory writable.
    assert_eq!(driver["image"], executor["image"]);
    for name in ["ember-driver", "ember-executor"] {
        let pod = &docs[&format!("Deployment/{name}")]["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        assert!(pod["volumes"].as_sequence().is_some_and(|v| !v.is_empty()));
    }
}

#[test]
fn the_image_builds_both_binaries_and_runs_as_a_user() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
        .expect("Dockerfile");
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage");
    assert!(text.contains("--bin ember ") && text.contains("--bin ember-executor"));
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    // The image's user is the one the manifests run as.
    assert!(user.starts_with("10001"));
    let docs = manifests();
    let image = container(&docs, "ember-driver")["image"]
        .as_str()
        .expect("image")
        .to_string();
    assert!(image.starts_with("ember:"), "{image}");
}
