//! The deployment files agree with the code they deploy, without Docker or a cluster:
//! every YAML file under docker/ and deploy/k8s/ parses; the Grafana dashboard asks
//! only for metrics that `tsst_actors::metrics` defines, and for the key ones; KEDA
//! scales the GPU workers on the queues `Topology` names, over RabbitMQ's HTTP API
//! (which counts unacknowledged messages), and waits longer than a batch, as do the
//! Deployments' and compose's grace periods; every worker's metrics port is the one
//! its `TSST_METRICS` serves, and Prometheus scrapes it; the kustomizations list
//! files that exist. Where the `docker compose` plugin is installed, `docker compose
//! config` must accept docker/compose.yaml.
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use tsst_actors::metrics;
use tsst_messages::{Role, Topology};

/// A 7B model's batch can take minutes: whatever waits for a worker to drain (grace
/// periods, KEDA's cooldown) must wait longer than this many seconds.
const LONGER_THAN_A_BATCH_SECS: u64 = 300;
/// Where workers serve metrics in containers (`TSST_METRICS=0.0.0.0:9187`).
const METRICS_PORT: u64 = 9187;

/// Every metric `tsst_actors::metrics` defines.
const DEFINED: &[&str] = &[
    metrics::CONSUMED,
    metrics::ACKED,
    metrics::REQUEUED,
    metrics::DEAD_LETTERED,
    metrics::PUBLISHED,
    metrics::BATCH_SIZE,
    metrics::BATCH_SECONDS,
    metrics::BATCH_FAILURES,
    metrics::BACKEND_RETRIES,
    metrics::BACKEND_ERRORS,
    metrics::TOKENS_GENERATED,
    metrics::TOKENS_PREFILLED,
    metrics::DECODE_STEP_SECONDS,
    metrics::NODES_EXPANDED,
    metrics::NODES_CREATED,
    metrics::QUESTIONS_FINISHED,
    metrics::VERIFIER_CALLS,
    metrics::MODEL_LOADED,
    metrics::WORKER_UP,
    metrics::WORKER_START,
];
/// The histograms, exposed as `<name>_bucket`, `<name>_sum` and `<name>_count`.
const HISTOGRAMS: &[&str] = &[
    metrics::BATCH_SECONDS,
    metrics::BATCH_SIZE,
    metrics::DECODE_STEP_SECONDS,
];
/// What the dashboard must show.
const KEY_METRICS: &[&str] = &[
    metrics::CONSUMED,
    metrics::ACKED,
    metrics::DEAD_LETTERED,
    metrics::BATCH_SECONDS,
    metrics::QUESTIONS_FINISHED,
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path as the repository spells it, for messages.
fn rel(path: &Path) -> String {
    let root = root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", rel(path)))
}

/// The YAML files under `dir`, recursively, in a stable order.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", rel(&dir)));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", rel(&dir)))
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every document of a YAML file (multi-document files too), as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", rel(path)))
}

/// A file of exactly one YAML document.
fn document(path: &Path) -> Value {
    let mut docs = documents(path);
    assert_eq!(
        docs.len(),
        1,
        "{}: expected one YAML document, found {}",
        rel(path),
        docs.len()
    );
    docs.remove(0)
}

/// The objects of every manifest under deploy/k8s/, with the file each is in.
fn k8s_objects() -> Vec<(PathBuf, Value)> {
    let mut objects = Vec::new();
    for path in yaml_files(&root().join("deploy/k8s")) {
        for doc in documents(&path) {
            objects.push((path.clone(), doc));
        }
    }
    objects
}

fn kind_of(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or("")
}

fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

/// The objects of one kind.
fn of_kind<'a>(objects: &'a [(PathBuf, Value)], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|(_, object)| kind_of(object) == kind)
        .map(|(_, object)| object)
        .collect()
}

/// The items of a YAML sequence; none when the value is missing or not a sequence.
fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

/// A whole number, written as a number or a string ("600").
fn whole(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The port of an address such as `0.0.0.0:9187`.
fn port_of(address: &str) -> Option<u64> {
    address.rsplit_once(':')?.1.parse().ok()
}

/// Seconds in a compose duration such as `10m`, `600s` or `1h30m`.
fn duration_secs(text: &str) -> Option<u64> {
    let mut total = 0;
    let mut number = 0u64;
    let mut digits = false;
    let mut units = false;
    for c in text.trim().chars() {
        if let Some(digit) = c.to_digit(10) {
            number = number.checked_mul(10)?.checked_add(u64::from(digit))?;
            digits = true;
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        if !digits {
            return None;
        }
        total += number * unit;
        number = 0;
        digits = false;
        units = true;
    }
    (units && !digits).then_some(total)
}

/// The metric a series in a query belongs to: a histogram's `_bucket`, `_sum` and
/// `_count` series belong to the histogram.
fn metric_of(series: &str) -> &str {
    for &histogram in HISTOGRAMS {
        for suffix in ["_bucket", "_sum", "_count"] {
            if series.strip_suffix(suffix) == Some(histogram) {
                return histogram;
            }
        }
    }
    series
}

/// The names in a PromQL expression that start with `tsst_`.
fn tsst_names(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("tsst_"))
        .collect()
}

/// (panel title, expr) of every query in the dashboard, rows' nested panels too.
fn collect_exprs(panels: &Value, out: &mut Vec<(String, String)>) {
    for panel in items(panels) {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in items(&panel["targets"]) {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.to_owned(), expr.to_owned()));
            }
        }
        collect_exprs(&panel["panels"], out);
    }
}

/// The value of an environment variable in a container spec's `env` list.
fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    items(&container["env"])
        .iter()
        .find(|var| var["name"].as_str() == Some(name))
        .and_then(|var| var["value"].as_str())
}

/// The value of an environment variable in a compose service (a mapping or a list
/// of `NAME=value`).
fn compose_env(service: &Value, name: &str) -> Option<String> {
    let environment = &service["environment"];
    if let Some(value) = environment.get(name) {
        return match value {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
    }
    items(environment).iter().find_map(|entry| {
        let (key, value) = entry.as_str()?.split_once('=')?;
        (key == name).then(|| value.to_owned())
    })
}

#[test]
fn every_yaml_file_parses() {
    let mut checked = Vec::new();
    for dir in ["docker", "deploy/k8s"] {
        let files = yaml_files(&root().join(dir));
        assert!(!files.is_empty(), "no YAML files under {dir}/");
        for path in files {
            let docs = documents(&path);
            assert!(!docs.is_empty(), "{} holds no YAML document", rel(&path));
            for (i, doc) in docs.iter().enumerate() {
                assert!(
                    doc.is_object(),
                    "{}: document {} is not a mapping: {doc}",
                    rel(&path),
                    i + 1
                );
            }
            checked.push(rel(&path));
        }
    }
    for wanted in [
        "docker/compose.yaml",
        "docker/prometheus/prometheus.yml",
        "deploy/k8s/kustomization.yaml",
    ] {
        assert!(
            checked.iter().any(|path| path == wanted),
            "{wanted} is missing (checked: {checked:?})"
        );
    }
}

#[test]
fn dashboard_queries_only_defined_metrics_and_the_key_ones() {
    let path = root().join("docker/grafana/dashboards/tsst.json");
    let dashboard: Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", rel(&path)));
    let mut exprs = Vec::new();
    collect_exprs(&dashboard["panels"], &mut exprs);
    assert!(!exprs.is_empty(), "{}: no panel has a query", rel(&path));

    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for (title, expr) in &exprs {
        for series in tsst_names(expr) {
            let metric = metric_of(series);
            if DEFINED.contains(&metric) {
                used.insert(metric.to_owned());
            } else {
                unknown.push(format!("panel \"{title}\": {series} in `{expr}`"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "{} queries metrics that tsst_actors::metrics does not define:\n  {}",
        rel(&path),
        unknown.join("\n  ")
    );
    let missing: Vec<&str> = KEY_METRICS
        .iter()
        .copied()
        .filter(|metric| !used.contains(*metric))
        .collect();
    assert!(
        missing.is_empty(),
        "{}: no panel shows {missing:?}",
        rel(&path)
    );
    // Queue depth comes from rabbitmq_prometheus (per-object metrics).
    for series in [
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
    ] {
        assert!(
            exprs.iter().any(|(_, expr)| expr.contains(series)),
            "{}: no panel shows {series}",
            rel(&path)
        );
    }

    // Grafana needs panel ids unique within the dashboard.
    let mut ids = BTreeSet::new();
    let mut stack: Vec<&Value> = items(&dashboard["panels"]).iter().collect();
    while let Some(panel) = stack.pop() {
        let id = panel["id"].as_u64().unwrap_or_else(|| {
            panic!(
                "{}: panel \"{}\" has no numeric id",
                rel(&path),
                panel["title"]
            )
        });
        assert!(ids.insert(id), "{}: panel id {id} repeats", rel(&path));
        stack.extend(items(&panel["panels"]));
    }

    // The provisioning loads the dashboard from where compose mounts it.
    let provider = document(&root().join("docker/grafana/provisioning/dashboards/tsst.yaml"));
    let folder = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("docker/grafana/provisioning/dashboards/tsst.yaml: providers[0].options.path");
    let compose = document(&root().join("docker/compose.yaml"));
    let mounts: Vec<&str> = items(&compose["services"]["grafana"]["volumes"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        mounts
            .iter()
            .any(|mount| mount.starts_with(&format!("./grafana/dashboards:{folder}"))),
        "docker/compose.yaml: grafana does not mount ./grafana/dashboards at {folder} (mounts: {mounts:?})"
    );
    let datasources =
        document(&root().join("docker/grafana/provisioning/datasources/prometheus.yaml"));
    assert!(
        items(&datasources["datasources"])
            .iter()
            .any(|source| source["type"].as_str() == Some("prometheus")),
        "docker/grafana/provisioning/datasources/prometheus.yaml provisions no Prometheus"
    );
}

#[test]
fn keda_scales_the_gpu_workers_on_their_queues_over_http() {
    let objects = k8s_objects();
    let deployments = of_kind(&objects, "Deployment");
    let secrets = of_kind(&objects, "Secret");
    let auths = of_kind(&objects, "TriggerAuthentication");
    let scaled = of_kind(&objects, "ScaledObject");
    assert!(!scaled.is_empty(), "deploy/k8s/ has no KEDA ScaledObject");
    assert!(
        !auths.is_empty(),
        "deploy/k8s/ has no KEDA TriggerAuthentication"
    );

    let topology = Topology::new("tsst");
    let wanted: BTreeSet<String> = [Role::Generator, Role::Scorer]
        .into_iter()
        .map(|role| topology.queue(role))
        .collect();
    let mut queues = BTreeSet::new();
    let mut targets = BTreeSet::new();
    for object in &scaled {
        let name = name_of(object);
        assert_eq!(
            object["apiVersion"].as_str(),
            Some("keda.sh/v1alpha1"),
            "ScaledObject {name}: apiVersion"
        );
        let spec = &object["spec"];
        let target = spec["scaleTargetRef"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("ScaledObject {name}: no spec.scaleTargetRef.name"));
        if let Some(kind) = spec["scaleTargetRef"]["kind"].as_str() {
            assert_eq!(
                kind, "Deployment",
                "ScaledObject {name}: scaleTargetRef.kind"
            );
        }
        // KEDA admits one ScaledObject per workload: more queues are more triggers.
        assert!(
            targets.insert(target.to_owned()),
            "Deployment {target} is the target of two ScaledObjects; give one ScaledObject a trigger per queue"
        );
        let deployment = deployments
            .iter()
            .find(|d| name_of(d) == target)
            .unwrap_or_else(|| panic!("ScaledObject {name} scales Deployment {target}, which deploy/k8s/ does not define"));
        let grace = whole(&deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
            .unwrap_or(30);
        assert!(
            grace > LONGER_THAN_A_BATCH_SECS,
            "Deployment {target}: terminationGracePeriodSeconds {grace} is not longer than a batch ({LONGER_THAN_A_BATCH_SECS} s): a scale-down would kill a draining worker"
        );
        let cooldown = whole(&spec["cooldownPeriod"]).unwrap_or(300);
        assert!(
            cooldown > LONGER_THAN_A_BATCH_SECS,
            "ScaledObject {name}: cooldownPeriod {cooldown} is not longer than a batch ({LONGER_THAN_A_BATCH_SECS} s)"
        );
        let min = whole(&spec["minReplicaCount"])
            .unwrap_or_else(|| panic!("ScaledObject {name}: no minReplicaCount"));
        let max = whole(&spec["maxReplicaCount"])
            .unwrap_or_else(|| panic!("ScaledObject {name}: no maxReplicaCount"));
        assert!(
            max >= 1 && min <= max,
            "ScaledObject {name}: minReplicaCount {min}, maxReplicaCount {max}"
        );
        let window = whole(
            &spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
                ["stabilizationWindowSeconds"],
        );
        assert!(
            window.is_some_and(|w| w > 0),
            "ScaledObject {name}: no advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds"
        );

        let triggers = items(&spec["triggers"]);
        assert!(!triggers.is_empty(), "ScaledObject {name} has no trigger");
        for trigger in triggers {
            let meta = &trigger["metadata"];
            let queue = meta["queueName"].as_str().unwrap_or("(no queueName)");
            assert_eq!(
                trigger["type"].as_str(),
                Some("rabbitmq"),
                "ScaledObject {name}: trigger on {queue} is not a rabbitmq trigger"
            );
            // AMQP mode counts only ready messages: a busy worker would look idle.
            assert_eq!(
                meta["protocol"].as_str(),
                Some("http"),
                "ScaledObject {name}: trigger on {queue} must use protocol http, so that unacknowledged messages count"
            );
            assert_eq!(
                meta["mode"].as_str(),
                Some("QueueLength"),
                "ScaledObject {name}: trigger on {queue}: mode"
            );
            let value = meta["value"].as_str().and_then(|v| v.parse::<f64>().ok());
            assert!(
                value.is_some_and(|v| v > 0.0),
                "ScaledObject {name}: trigger on {queue}: value must be a positive number in a string, got {}",
                meta["value"]
            );
            assert!(
                wanted.contains(queue),
                "ScaledObject {name}: queueName {queue} is not a GPU role's queue ({wanted:?})"
            );
            queues.insert(queue.to_owned());

            // Where KEDA finds the management URL: a TriggerAuthentication reading a
            // Secret of deploy/k8s/, or an environment variable of the target.
            if meta["hostFromEnv"].is_string() {
                continue;
            }
            let auth_name = trigger["authenticationRef"]["name"].as_str().unwrap_or_else(|| {
                panic!("ScaledObject {name}: trigger on {queue} has neither hostFromEnv nor authenticationRef")
            });
            let auth = auths
                .iter()
                .find(|a| name_of(a) == auth_name)
                .unwrap_or_else(|| {
                    panic!("ScaledObject {name}: TriggerAuthentication {auth_name} is not in deploy/k8s/")
                });
            let refs = items(&auth["spec"]["secretTargetRef"]);
            assert!(
                refs.iter().any(|r| r["parameter"].as_str() == Some("host")),
                "TriggerAuthentication {auth_name} gives no `host` parameter"
            );
            for secret_ref in refs {
                let secret_name = secret_ref["name"].as_str().unwrap_or("");
                let key = secret_ref["key"].as_str().unwrap_or("");
                let secret = secrets
                    .iter()
                    .find(|s| name_of(s) == secret_name)
                    .unwrap_or_else(|| {
                        panic!("TriggerAuthentication {auth_name} reads Secret {secret_name}, which deploy/k8s/ does not define")
                    });
                assert!(
                    secret["stringData"].get(key).is_some() || secret["data"].get(key).is_some(),
                    "TriggerAuthentication {auth_name} reads key {key} of Secret {secret_name}, which has none"
                );
            }
        }
    }
    assert_eq!(
        queues, wanted,
        "the ScaledObjects' queueNames must be the GPU roles' queues"
    );
}

#[test]
fn every_worker_deployment_serves_metrics_on_its_port_and_drains() {
    let objects = k8s_objects();
    assert!(
        !of_kind(&objects, "Deployment").is_empty(),
        "deploy/k8s/ has no Deployment"
    );
    for (path, deployment) in objects
        .iter()
        .filter(|(_, object)| kind_of(object) == "Deployment")
    {
        let name = name_of(deployment);
        let at = format!("{} Deployment {name}", rel(path));
        let pod = &deployment["spec"]["template"];
        let grace = whole(&pod["spec"]["terminationGracePeriodSeconds"]).unwrap_or(30);
        assert!(
            grace > LONGER_THAN_A_BATCH_SECS,
            "{at}: terminationGracePeriodSeconds {grace} is not longer than a batch ({LONGER_THAN_A_BATCH_SECS} s)"
        );
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(
            annotations["prometheus.io/scrape"].as_str(),
            Some("true"),
            "{at}: pod annotation prometheus.io/scrape"
        );
        assert_eq!(
            whole(&annotations["prometheus.io/port"]),
            Some(METRICS_PORT),
            "{at}: pod annotation prometheus.io/port"
        );
        let containers = items(&pod["spec"]["containers"]);
        assert!(!containers.is_empty(), "{at}: no container");
        for container in containers {
            let at = format!("{at}, container {}", container["name"]);
            let served = env_value(container, "TSST_METRICS")
                .unwrap_or_else(|| panic!("{at}: no TSST_METRICS in env"));
            assert!(
                served.starts_with("0.0.0.0:") || served.starts_with("[::]:"),
                "{at}: TSST_METRICS={served} does not listen on every interface"
            );
            let port = port_of(served)
                .unwrap_or_else(|| panic!("{at}: TSST_METRICS={served} names no port"));
            let metrics_port = items(&container["ports"])
                .iter()
                .find(|p| p["name"].as_str() == Some("metrics"))
                .and_then(|p| whole(&p["containerPort"]))
                .unwrap_or_else(|| panic!("{at}: no container port named metrics"));
            assert_eq!(
                metrics_port, port,
                "{at}: container port `metrics` differs from TSST_METRICS={served}"
            );
            assert_eq!(port, METRICS_PORT, "{at}: metrics port");

            // Nothing may kill a worker that is busy with a long batch or draining.
            assert!(
                container["livenessProbe"].is_null(),
                "{at}: a liveness probe would restart a worker in a long batch or a drain"
            );
            // The drain starts with SIGTERM, after preStop: the hook may only wait a moment.
            let pre_stop = &container["lifecycle"]["preStop"];
            if !pre_stop.is_null() {
                let command: Vec<&str> = items(&pre_stop["exec"]["command"])
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                let secs = match command.as_slice() {
                    ["sleep", secs] => secs.parse::<u64>().ok(),
                    _ => whole(&pre_stop["sleep"]["seconds"]),
                };
                assert!(
                    secs.is_some_and(|s| s <= 30),
                    "{at}: preStop should only wait a moment (sleep of at most 30 s), got {pre_stop}"
                );
            }

            // A worker asked to run on CUDA gets a GPU, and only then.
            let args: Vec<&str> = items(&container["args"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let on_cuda = args
                .windows(2)
                .any(|pair| pair[0] == "--device" && pair[1].starts_with("cuda"));
            let gpus = whole(&container["resources"]["limits"]["nvidia.com/gpu"]).unwrap_or(0);
            assert_eq!(
                on_cuda,
                gpus > 0,
                "{at}: args {args:?} with nvidia.com/gpu limit {gpus}"
            );
        }
    }
}

#[test]
fn prometheus_scrapes_the_workers_and_rabbitmq() {
    let path = root().join("docker/prometheus/prometheus.yml");
    let config = document(&path);
    let jobs = items(&config["scrape_configs"]);
    assert!(!jobs.is_empty(), "{}: no scrape_configs", rel(&path));
    let scrapes_port = |port: u64| {
        jobs.iter().any(|job| {
            let by_dns = items(&job["dns_sd_configs"])
                .iter()
                .any(|sd| whole(&sd["port"]) == Some(port));
            let by_target = items(&job["static_configs"]).iter().any(|sc| {
                items(&sc["targets"])
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|target| port_of(target) == Some(port))
            });
            by_dns || by_target
        })
    };
    assert!(
        scrapes_port(METRICS_PORT),
        "{}: no job scrapes the workers' port {METRICS_PORT}",
        rel(&path)
    );
    assert!(
        scrapes_port(15692),
        "{}: no job scrapes RabbitMQ's rabbitmq_prometheus port 15692",
        rel(&path)
    );
    let plugins = read(&root().join("docker/rabbitmq/enabled_plugins"));
    assert!(
        plugins.contains("rabbitmq_prometheus"),
        "docker/rabbitmq/enabled_plugins does not enable rabbitmq_prometheus"
    );
    let conf = read(&root().join("docker/rabbitmq/rabbitmq.conf"));
    assert!(
        conf.lines()
            .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
            .any(|line| line == "prometheus.return_per_object_metrics = true"),
        "docker/rabbitmq/rabbitmq.conf does not turn on per-queue metrics"
    );
}

#[test]
fn compose_workers_drain_and_serve_metrics() {
    let path = root().join("docker/compose.yaml");
    let compose = document(&path);
    let services = compose["services"]
        .as_object()
        .unwrap_or_else(|| panic!("{}: no services", rel(&path)));
    let mut workers = Vec::new();
    for (name, service) in services {
        let command: Vec<&str> = items(&service["command"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if command.first() != Some(&"worker") {
            continue;
        }
        workers.push(name.as_str());
        let grace = service["stop_grace_period"].as_str().unwrap_or_else(|| {
            panic!(
                "{}: worker service {name} has no stop_grace_period (the default 10 s kills a draining worker)",
                rel(&path)
            )
        });
        let secs = duration_secs(grace).unwrap_or_else(|| {
            panic!(
                "{}: service {name}: stop_grace_period {grace} is not a duration",
                rel(&path)
            )
        });
        assert!(
            secs > LONGER_THAN_A_BATCH_SECS,
            "{}: service {name}: stop_grace_period {grace} is not longer than a batch ({LONGER_THAN_A_BATCH_SECS} s)",
            rel(&path)
        );
        let served = compose_env(service, "TSST_METRICS").unwrap_or_else(|| {
            panic!("{}: worker service {name} sets no TSST_METRICS", rel(&path))
        });
        assert_eq!(
            port_of(&served),
            Some(METRICS_PORT),
            "{}: service {name}: TSST_METRICS={served}",
            rel(&path)
        );
    }
    for wanted in [
        "generator-scorer",
        "generator-scorer-cpu",
        "verifier-labeler",
    ] {
        assert!(
            workers.contains(&wanted),
            "{}: no worker service {wanted} (workers: {workers:?})",
            rel(&path)
        );
    }
    let gpu = &services["generator-scorer"];
    let devices = items(&gpu["deploy"]["resources"]["reservations"]["devices"]);
    assert!(
        devices
            .iter()
            .any(|d| d["driver"].as_str() == Some("nvidia")),
        "{}: generator-scorer reserves no NVIDIA device",
        rel(&path)
    );
}

#[test]
fn kustomizations_list_files_that_exist() {
    let kustomizations: Vec<PathBuf> = yaml_files(&root().join("deploy/k8s"))
        .into_iter()
        .filter(|path| path.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .collect();
    assert!(
        !kustomizations.is_empty(),
        "deploy/k8s/ has no kustomization.yaml"
    );
    for path in kustomizations {
        let dir = path.parent().expect("a kustomization's folder");
        let kustomization = document(&path);
        let mut listed = Vec::new();
        for key in ["resources", "components", "crds"] {
            listed.extend(items(&kustomization[key]).iter().filter_map(Value::as_str));
        }
        for patch in items(&kustomization["patches"]) {
            listed.extend(patch["path"].as_str());
        }
        for generator in ["configMapGenerator", "secretGenerator"] {
            for entry in items(&kustomization[generator]) {
                for key in ["files", "envs"] {
                    listed.extend(
                        items(&entry[key])
                            .iter()
                            .filter_map(Value::as_str)
                            .map(|file| file.split_once('=').map_or(file, |(_, file)| file)),
                    );
                }
            }
        }
        assert!(!listed.is_empty(), "{} lists nothing", rel(&path));
        for entry in &listed {
            if entry.contains("://") {
                continue;
            }
            assert!(
                dir.join(entry).exists(),
                "{} lists {entry}, which does not exist",
                rel(&path)
            );
        }
        // And the converse: a manifest beside the kustomization that it leaves out
        // would never be applied.
        for file in yaml_files(dir) {
            if file.parent() != Some(dir) || file == path {
                continue;
            }
            let file_name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            assert!(
                listed.contains(&file_name),
                "{} does not list {}, which lies beside it",
                rel(&path),
                rel(&file)
            );
        }
    }
}

#[test]
fn dockerfiles_run_tsst_as_a_draining_worker() {
    let fetch = read(&root().join("tools/fetch-ort.sh"));
    let version = fetch
        .lines()
        .find_map(|line| line.strip_prefix("version="))
        .expect("tools/fetch-ort.sh sets version=");
    for (file, features, ort) in [
        ("docker/Dockerfile", "", "fetch-ort.sh"),
        (
            "docker/Dockerfile.cuda",
            "--features cuda",
            "fetch-ort.sh --gpu",
        ),
    ] {
        let text = read(&root().join(file));
        let mut wanted = vec![
            "cargo build --release".to_owned(),
            "--bin tsst".to_owned(),
            ort.to_owned(),
            format!("libonnxruntime.so.{version}"),
            "ORT_DYLIB_PATH=".to_owned(),
            "TSST_METRICS=0.0.0.0:9187".to_owned(),
            "EXPOSE 9187".to_owned(),
            "STOPSIGNAL SIGTERM".to_owned(),
            "ENTRYPOINT [\"tsst\"]".to_owned(),
        ];
        if !features.is_empty() {
            wanted.push(features.to_owned());
        }
        for needle in &wanted {
            assert!(text.contains(needle.as_str()), "{file} lacks `{needle}`");
        }
        let user = text
            .lines()
            .rev()
            .find_map(|line| line.trim().strip_prefix("USER "))
            .unwrap_or_else(|| panic!("{file} sets no USER: the worker would run as root"));
        assert!(
            !matches!(user.trim(), "root" | "0" | "0:0"),
            "{file}: USER {user} is root"
        );
    }
    let ignore = read(&root().join(".dockerignore"));
    for excluded in ["target", ".venv-tools", ".ort", "data", "runs", ".git"] {
        assert!(
            ignore
                .lines()
                .map(|line| line.trim().trim_end_matches('/'))
                .any(|line| line == excluded),
            ".dockerignore does not exclude {excluded}/"
        );
    }
}

#[test]
fn docker_compose_accepts_the_compose_file() {
    let installed = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        println!("SKIPPED: docker compose not installed");
        return;
    }
    let runs: [&[&str]; 2] = [
        &[],
        &["--profile", "gpu", "--profile", "cpu", "--profile", "cli"],
    ];
    for profiles in runs {
        let output = Command::new("docker")
            .arg("compose")
            .arg("-f")
            .arg(root().join("docker/compose.yaml"))
            .args(profiles)
            .args(["config", "-q"])
            .current_dir(root())
            .output()
            .expect("running docker compose config");
        assert!(
            output.status.success(),
            "docker compose -f docker/compose.yaml {} config -q rejects the file:\n{}",
            profiles.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
