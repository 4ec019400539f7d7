//! The Helm chart `deploy/helm/trace-summarizer`, linted and rendered by Helm's own Go SDK.
//!
//! No helm binary is needed: `tests/helm/render.py` drives helm-python-sdk (module
//! `helm_python`, `pip install helm-python-sdk`; `.ci/run` installs it), which embeds the SDK.
//! Without it, the tests that need Helm print why and return (under `CI=true` they fail
//! instead); the checks of the chart's copied files always run.
//!
//! What is checked: `helm lint --strict` passes; the default values render exactly the objects of
//! the kustomization `deploy/kubernetes` (same kinds and names, and the same contents but for
//! Helm's bookkeeping labels), plus the install hook Job and the dashboard ConfigMap; upstream's
//! example values give install `--window 3d --error-rule error --adopt` and the schema
//! `platform`; the dashboard and the alert rules in the chart are deploy's files.
//!
//! Run: `cargo test --test helm_chart`

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

// The CLI definition itself, so the rendered commands are checked against the real flags.
#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;

const CHART: &str = "deploy/helm/trace-summarizer";
const EXAMPLE_VALUES: &str = "deploy/helm/trace-summarizer/values-serviceradar.yaml";
const KUSTOMIZATION: &str = "deploy/kubernetes/kustomization.yaml";
const INSTALL_JOB: &str = "deploy/kubernetes/job-install.yaml";
const HELPER: &str = "tests/helm/render.py";

/// Labels Helm's objects carry beyond the kustomization's: they say which release and chart
/// made them, not what the object does.
const BOOKKEEPING_LABELS: [&str; 4] = [
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A YAML node as JSON: maps compare regardless of key order (Helm's toYaml sorts keys).
fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => Value::from(r.parse::<f64>().expect("a YAML real")),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("unexpected map key {other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        other => panic!("unexpected YAML node {other:?}"),
    }
}

/// The non-empty documents of a YAML text, as JSON.
fn yaml_docs(text: &str, what: &str) -> Vec<Value> {
    YamlLoader::load_from_str(text)
        .unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}"))
        .iter()
        .filter(|d| !d.is_null())
        .map(to_json)
        .collect()
}

fn yaml_file(rel: &str) -> Value {
    let mut docs = yaml_docs(&read(rel), rel);
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn kind_name(o: &Value) -> (String, String) {
    let s = |v: &Value, what: &str| {
        v.as_str()
            .unwrap_or_else(|| panic!("object without {what}: {o}"))
            .to_string()
    };
    (s(&o["kind"], "kind"), s(&o["metadata"]["name"], "name"))
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind_name(o) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", kinds_and_names(objects)))
}

fn kinds_and_names(objects: &[Value]) -> BTreeSet<(String, String)> {
    objects.iter().map(kind_name).collect()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected a list, got {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("expected a string, got {s}"))
                .to_string()
        })
        .collect()
}

fn only_container(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "expected one container");
    &containers[0]
}

fn env_entry<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env_entry(container, name).and_then(|e| e["value"].as_str().map(str::to_string))
}

fn secret_ref(container: &Value, name: &str) -> Option<(String, String)> {
    let r = &env_entry(container, name)?["valueFrom"]["secretKeyRef"];
    Some((
        r["name"].as_str()?.to_string(),
        r["key"].as_str()?.to_string(),
    ))
}

fn ca_secret(workload: &Value) -> String {
    workload["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "pg-ca")
        .and_then(|v| v["secret"]["secretName"].as_str())
        .expect("the pg-ca volume's secret")
        .to_string()
}

/// Removes Helm's bookkeeping labels wherever labels or selectors appear.
fn strip_bookkeeping(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for key in BOOKKEEPING_LABELS {
                map.remove(key);
            }
            map.values_mut().for_each(strip_bookkeeping);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_bookkeeping),
        _ => {}
    }
}

fn parse_cli(args: &[String]) -> cli::Cli {
    use clap::Parser;
    let argv = std::iter::once("trace-summarizer".to_string()).chain(args.iter().cloned());
    cli::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("the CLI rejects {args:?}:\n{e}"))
}

/// The variables trace-summarizer reads: its flags' env fallbacks and the libpq ones.
fn known_env() -> BTreeSet<String> {
    use clap::CommandFactory;
    let mut known: BTreeSet<String> = [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGAPPNAME",
    ]
    .map(String::from)
    .into();
    let mut stack = vec![cli::Cli::command()];
    while let Some(cmd) = stack.pop() {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                known.insert(env.to_string_lossy().into_owned());
            }
        }
        stack.extend(cmd.get_subcommands().cloned());
    }
    known
}

// ---------------------------------------------------------------------------------------------
// Helm, through tests/helm/render.py
// ---------------------------------------------------------------------------------------------

/// True when helm_python imports; otherwise says why (once) and, under CI=true, fails.
fn helm_available() -> bool {
    static AVAILABLE: OnceLock<Result<String, String>> = OnceLock::new();
    let probe = AVAILABLE.get_or_init(|| {
        match Command::new("python3")
            .args([HELPER, "probe"])
            .current_dir(repo_root())
            .output()
        {
            Ok(out) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            Err(e) => Err(format!("cannot run python3: {e}")),
        }
    });
    match probe {
        Ok(_) => true,
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "helm-python-sdk is missing, and CI=true requires it ({why}); .ci/run installs it"
            );
            eprintln!("skipping: Helm's SDK is not available: {why}");
            false
        }
    }
}

fn helper(args: &[&str]) -> std::process::Output {
    Command::new("python3")
        .arg(HELPER)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running {HELPER} {args:?}: {e}"))
}

/// `helm template` of the chart with these values files and an optional --set-json.
fn render(values_files: &[&str], set_json: Option<&str>) -> Vec<Value> {
    let mut args = vec!["render", CHART];
    args.extend_from_slice(values_files);
    if let Some(json) = set_json {
        args.extend(["--set-json", json]);
    }
    let out = helper(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rendering with {values_files:?} {set_json:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = yaml_docs(&stdout, "the rendered chart");
    assert!(!objects.is_empty(), "the chart rendered nothing");
    objects
}

// ---------------------------------------------------------------------------------------------
// The kustomization, as `kubectl kustomize` renders it
// ---------------------------------------------------------------------------------------------

/// The kustomization's `images:` rewrite, applied to every container of a workload.
fn set_images(object: &mut Value, kustomization: &Value) {
    // pointer_mut, not IndexMut: indexing a missing key would insert it.
    let Some(containers) = object
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in containers {
        let image = c["image"].as_str().expect("container image").to_string();
        let (name, tag) = image.split_once(':').unwrap_or((&image, "latest"));
        for rule in kustomization["images"].as_array().into_iter().flatten() {
            if rule["name"].as_str() == Some(name) {
                let new_name = rule["newName"].as_str().unwrap_or(name);
                let new_tag = rule["newTag"].as_str().unwrap_or(tag);
                c["image"] = Value::String(format!("{new_name}:{new_tag}"));
            }
        }
    }
}

/// Every object of the files the kustomization lists, with its image set.
fn kustomization_objects() -> Vec<Value> {
    let k = yaml_file(KUSTOMIZATION);
    for unsupported in [
        "namePrefix",
        "nameSuffix",
        "namespace",
        "patches",
        "commonLabels",
    ] {
        assert!(
            k.get(unsupported).is_none(),
            "the kustomization sets {unsupported}: teach this test about it"
        );
    }
    let mut out = Vec::new();
    for file in str_list(&k["resources"]) {
        let rel = format!("deploy/kubernetes/{file}");
        for mut o in yaml_docs(&read(&rel), &rel) {
            set_images(&mut o, &k);
            out.push(o);
        }
    }
    assert!(!out.is_empty());
    out
}

/// deploy/kubernetes/job-install.yaml with the kustomization's image.
fn kustomize_install_job() -> Value {
    let mut job = yaml_file(INSTALL_JOB);
    set_images(&mut job, &yaml_file(KUSTOMIZATION));
    job
}

// ---------------------------------------------------------------------------------------------
// Lint
// ---------------------------------------------------------------------------------------------

#[test]
fn chart_passes_helm_lint_strict_with_the_default_and_the_example_values() {
    if !helm_available() {
        return;
    }
    for values in [None, Some(EXAMPLE_VALUES)] {
        let mut args = vec!["lint", CHART];
        args.extend(values);
        let out = helper(&args);
        assert!(
            out.status.success(),
            "helm lint --strict {CHART} {values:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart = yaml_file(&format!("{CHART}/Chart.yaml"));
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "trace-summarizer");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "appVersion is the default image tag: keep it at Cargo.toml's version"
    );
}

// ---------------------------------------------------------------------------------------------
// Default values: the kustomization's objects, plus the hook Job and the dashboard
// ---------------------------------------------------------------------------------------------

#[test]
fn default_values_render_the_kustomization_kinds_and_names_plus_the_hook_job_and_dashboard() {
    if !helm_available() {
        return;
    }
    let rendered = render(&[], None);
    let mut want = kinds_and_names(&kustomization_objects());
    let name = |k: &str, n: &str| (k.to_string(), n.to_string());
    // Every kind the kustomization renders today.
    for expected in [
        name("ServiceAccount", "trace-summarizer"),
        name("Deployment", "trace-summarizer"),
        name("Service", "trace-summarizer"),
        name("PodDisruptionBudget", "trace-summarizer"),
        name("PodMonitor", "trace-summarizer"),
        name("PrometheusRule", "trace-summarizer"),
    ] {
        assert!(
            want.contains(&expected),
            "{expected:?} left the kustomization"
        );
    }
    want.insert(name("Job", "trace-summarizer-install"));
    want.insert(name("ConfigMap", "trace-summarizer-dashboard"));
    assert_eq!(kinds_and_names(&rendered), want);
    assert_eq!(rendered.len(), want.len(), "an object is rendered twice");
    for o in &rendered {
        // Like the kustomization: the namespace is the release's (-n), where the secrets are.
        assert!(
            o["metadata"].get("namespace").is_none(),
            "{:?} sets a namespace",
            kind_name(o)
        );
    }
}

#[test]
fn default_values_render_the_same_objects_as_the_kustomization() {
    if !helm_available() {
        return;
    }
    let rendered = render(&[], None);
    for mut ours in kustomization_objects() {
        let (kind, name) = kind_name(&ours);
        let mut theirs = find(&rendered, &kind, &name).clone();
        strip_bookkeeping(&mut theirs);
        strip_bookkeeping(&mut ours);
        assert_eq!(
            theirs, ours,
            "the chart's {kind} {name} differs from deploy/kubernetes's (left: Helm's)"
        );
    }
}

#[test]
fn hook_job_is_the_kustomize_install_job_run_before_install_and_upgrade() {
    if !helm_available() {
        return;
    }
    let rendered = render(&[], None);
    let mut job = find(&rendered, "Job", "trace-summarizer-install").clone();
    let annotations = &job["metadata"]["annotations"];
    let hooks: BTreeSet<&str> = annotations["helm.sh/hook"]
        .as_str()
        .expect("helm.sh/hook")
        .split(',')
        .map(str::trim)
        .collect();
    assert_eq!(hooks, BTreeSet::from(["pre-install", "pre-upgrade"]));
    let policy = annotations["helm.sh/hook-delete-policy"]
        .as_str()
        .expect("helm.sh/hook-delete-policy");
    // A Job's pod template cannot change: the previous Job must go before the next is created.
    assert!(
        policy
            .split(',')
            .any(|p| p.trim() == "before-hook-creation"),
        "{policy}"
    );

    let args = str_list(&only_container(&job)["args"]);
    let cli = parse_cli(&args);
    let cli::Command::Install(install) = cli.command else {
        panic!("the hook Job does not run install: {args:?}")
    };
    assert_eq!(install.mode, cli::Mode::Incremental);
    assert_eq!(install.window, "7d");
    assert_eq!(install.error_rule, "not-ok");
    assert!(
        !install.adopt,
        "adopting is upstream's choice, not a default"
    );
    for flag in ["--window", "--error-rule"] {
        assert!(
            args.iter().any(|a| a == flag),
            "{flag} not passed: {args:?}"
        );
    }

    // The rest is deploy/kubernetes/job-install.yaml, but for the hook's annotations and the
    // account: the chart's ServiceAccount does not exist yet when a pre-install hook runs.
    let mut plain = kustomize_install_job();
    assert_eq!(
        str_list(&only_container(&plain)["args"]),
        ["install", "--mode", "incremental"]
    );
    for j in [&mut job, &mut plain] {
        strip_bookkeeping(j);
        j["metadata"].as_object_mut().unwrap().remove("annotations");
        j["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("serviceAccountName");
        j["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("args");
    }
    assert_eq!(
        job, plain,
        "the hook Job differs from {INSTALL_JOB} (left: Helm's)"
    );
}

#[test]
fn worker_selectors_do_not_match_the_hook_jobs_pods() {
    if !helm_available() {
        return;
    }
    let rendered = render(&[], None);
    let job_labels = &find(&rendered, "Job", "trace-summarizer-install")["spec"]["template"]
        ["metadata"]["labels"];
    let matches = |selector: &Value| {
        let wanted = selector.as_object().expect("a selector");
        assert!(!wanted.is_empty());
        wanted.iter().all(|(k, v)| &job_labels[k] == v)
    };
    for (kind, selector) in [
        ("Deployment", &["spec", "selector", "matchLabels"][..]),
        ("PodDisruptionBudget", &["spec", "selector", "matchLabels"]),
        ("PodMonitor", &["spec", "selector", "matchLabels"]),
        ("Service", &["spec", "selector"]),
    ] {
        let mut v = find(&rendered, kind, "trace-summarizer");
        for key in selector {
            v = &v[key];
        }
        assert!(!matches(v), "the {kind}'s selector picks the install pods");
    }
}

#[test]
fn dashboard_config_map_carries_the_grafana_sidecar_label_and_the_dashboard() {
    if !helm_available() {
        return;
    }
    let rendered = render(&[], None);
    let cm = find(&rendered, "ConfigMap", "trace-summarizer-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let data = cm["data"].as_object().expect("data");
    assert_eq!(data.len(), 1, "one dashboard");
    let (key, text) = data.iter().next().unwrap();
    assert!(key.ends_with(".json"), "{key}");
    let ours: Value = serde_json::from_str(text.as_str().expect("a string")).expect("JSON");
    let deploys: Value =
        serde_json::from_str(&read("deploy/grafana/trace-summarizer-dashboard.json")).unwrap();
    assert_eq!(
        ours, deploys,
        "the ConfigMap's dashboard is not deploy/grafana's"
    );

    // The label is configurable (another sidecar label; null drops the default one, even when a
    // values file sets it too), and so is an annotation (the folder).
    let rendered = render(
        &[EXAMPLE_VALUES],
        Some(
            r#"{"dashboard":{"labels":{"grafana_dashboard":null,"dashboards":"grafana"},
                "annotations":{"grafana_folder":"Tracing"}}}"#,
        ),
    );
    let cm = find(&rendered, "ConfigMap", "trace-summarizer-dashboard");
    assert!(cm["metadata"]["labels"].get("grafana_dashboard").is_none());
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "grafana");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Tracing");
}

#[test]
fn prometheus_rule_groups_are_the_plain_rules_files() {
    if !helm_available() {
        return;
    }
    let rendered = render(&[], None);
    let rule = find(&rendered, "PrometheusRule", "trace-summarizer");
    let plain = yaml_file("deploy/prometheus/trace-summarizer.rules.yaml");
    assert!(plain["groups"].as_array().is_some_and(|g| !g.is_empty()));
    assert_eq!(rule["spec"]["groups"], plain["groups"]);
}

#[test]
fn toggles_leave_out_the_monitoring_objects_the_dashboard_and_the_hook() {
    if !helm_available() {
        return;
    }
    let rendered = render(
        &[],
        Some(
            r#"{"podMonitor":{"enabled":false},"prometheusRule":{"enabled":false},
                "dashboard":{"enabled":false},"install":{"enabled":false}}"#,
        ),
    );
    let kinds: BTreeSet<String> = kinds_and_names(&rendered)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into()
    );
}

#[test]
fn another_cluster_name_moves_both_secrets_of_workers_and_hook() {
    if !helm_available() {
        return;
    }
    let rendered = render(&[], Some(r#"{"database":{"cluster":"pg-prod"}}"#));
    for (kind, name) in [
        ("Deployment", "trace-summarizer"),
        ("Job", "trace-summarizer-install"),
    ] {
        let w = find(&rendered, kind, name);
        assert_eq!(
            secret_ref(only_container(w), "DATABASE_URL"),
            Some(("pg-prod-app".into(), "uri".into())),
            "{kind}"
        );
        assert_eq!(ca_secret(w), "pg-prod-ca", "{kind}");
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream's example values
// ---------------------------------------------------------------------------------------------

#[test]
fn example_values_install_with_upstreams_schema_window_error_rule_and_adopt() {
    if !helm_available() {
        return;
    }
    let rendered = render(&[EXAMPLE_VALUES], None);
    let job = find(&rendered, "Job", "trace-summarizer-install");
    let deployment = find(&rendered, "Deployment", "trace-summarizer");

    let args = str_list(&only_container(job)["args"]);
    let cli::Command::Install(install) = parse_cli(&args).command else {
        panic!("the hook Job does not run install: {args:?}")
    };
    assert_eq!(install.mode, cli::Mode::Incremental, "{args:?}");
    assert_eq!(install.window, "3d", "{args:?}");
    assert_eq!(install.error_rule, "error", "{args:?}");
    assert!(
        install.adopt,
        "upstream has its own table: --adopt ({args:?})"
    );
    for pair in [["--window", "3d"], ["--error-rule", "error"]] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
    }

    let known = known_env();
    for (what, w) in [("hook Job", job), ("Deployment", deployment)] {
        let c = only_container(w);
        assert_eq!(
            env_value(c, "TRACE_SUMMARIZER_SCHEMA").as_deref(),
            Some("platform"),
            "{what}"
        );
        // Upstream's credentials secret has no URL: libpq variables instead, to the primary.
        assert!(env_entry(c, "DATABASE_URL").is_none(), "{what}");
        assert_eq!(env_value(c, "PGHOST").as_deref(), Some("cnpg-rw"), "{what}");
        assert_eq!(
            env_value(c, "PGDATABASE").as_deref(),
            Some("serviceradar"),
            "{what}"
        );
        for (var, key) in [("PGUSER", "username"), ("PGPASSWORD", "password")] {
            assert_eq!(
                secret_ref(c, var),
                Some(("serviceradar-db-credentials".into(), key.into())),
                "{what} {var}"
            );
        }
        assert_eq!(
            env_value(c, "PGSSLMODE").as_deref(),
            Some("verify-full"),
            "{what}"
        );
        assert_eq!(ca_secret(w), "cnpg-ca", "{what}");
        for e in c["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            assert!(
                known.contains(name),
                "{what} sets {name}, which trace-summarizer does not read"
            );
        }
    }
    // The worker's command is unchanged.
    assert!(matches!(
        parse_cli(&str_list(&only_container(deployment)["args"])).command,
        cli::Command::Run(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// The chart's copies of deploy's files (no Helm needed)
// ---------------------------------------------------------------------------------------------

#[test]
fn chart_files_are_copies_of_deploys_dashboard_and_rules() {
    for (copy, original) in [
        (
            "files/trace-summarizer-dashboard.json",
            "deploy/grafana/trace-summarizer-dashboard.json",
        ),
        (
            "files/trace-summarizer.rules.yaml",
            "deploy/prometheus/trace-summarizer.rules.yaml",
        ),
    ] {
        let copy = format!("{CHART}/{copy}");
        assert!(
            read(&copy) == read(original),
            "{copy} differs from {original}: cp {original} {copy}"
        );
    }
}
