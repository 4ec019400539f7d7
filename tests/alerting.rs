//! The alerting kit under `deploy/`: the Prometheus rules pass `promtool check rules` and their
//! own unit tests (`promtool test rules`), the PrometheusRule carries the very same groups, every
//! alert is documented and has a case where it fires and one where it does not, the Grafana
//! dashboard is well formed, and every metric the rules and the dashboard query is one a real
//! worker serves on /metrics, with the `schema` label the alerts group by.
//!
//! promtool comes with Debian's `prometheus` package, which `.ci/run` installs. Without it the
//! two promtool tests say so and pass, except when `CI=true`, where they fail.
//!
//! Run: `cargo test --test alerting`
mod common;
use chrono::{Duration as CD, Utc};
use common::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use trace_summarizer::lab::spangen::{insert_spans, SpanGen};
use yaml_rust2::{Yaml, YamlLoader};

const RULES: &str = "deploy/prometheus/trace-summarizer.rules.yaml";
const RULE_TESTS: &str = "deploy/prometheus/trace-summarizer.rules.test.yaml";
const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheusrule.yaml";
const DASHBOARD: &str = "deploy/grafana/trace-summarizer-dashboard.json";

/// The one metric without the `schema` label: it describes the binary, not an installation.
const BUILD_INFO: &str = "trace_summarizer_build_info";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The single YAML document of a file.
fn yaml(rel: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(rel))
        .unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn string_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {y:?}"))
}

fn list_of<'a>(y: &'a Yaml, what: &str) -> &'a Vec<Yaml> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {y:?}"))
}

/// The alerting rules of the plain rules file, every group.
fn alert_rules() -> Vec<Yaml> {
    let rules = yaml(RULES);
    let groups = list_of(&rules["groups"], "groups");
    assert!(!groups.is_empty(), "{RULES} has no group");
    let alerts: Vec<Yaml> = groups
        .iter()
        .flat_map(|g| list_of(&g["rules"], "rules").iter().cloned())
        .filter(|r| r["alert"].as_str().is_some())
        .collect();
    assert!(!alerts.is_empty(), "{RULES} has no alert");
    alerts
}

fn alert_name(rule: &Yaml) -> &str {
    string_of(&rule["alert"], "alert")
}

// ---------------------------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------------------------

/// promtool, or None (after saying why) when it is not installed outside CI.
fn promtool() -> Option<Command> {
    match Command::new("promtool").arg("--version").output() {
        Ok(_) => {
            let mut cmd = Command::new("promtool");
            cmd.current_dir(repo_root());
            Some(cmd)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is not installed, and CI=true requires it \
                 (Debian: apt-get install prometheus; .ci/run does)"
            );
            eprintln!(
                "promtool is not installed: skipping (Debian: apt-get install prometheus; CI installs it)"
            );
            None
        }
        Err(e) => panic!("running promtool --version: {e}"),
    }
}

fn promtool_ok(mut cmd: Command, args: &[&str]) {
    let out = cmd.args(args).output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check_rules() {
    if let Some(cmd) = promtool() {
        promtool_ok(cmd, &["check", "rules", RULES]);
    }
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    if let Some(cmd) = promtool() {
        promtool_ok(cmd, &["test", "rules", RULE_TESTS]);
    }
}

// ---------------------------------------------------------------------------------------------
// The rules themselves (no promtool needed)
// ---------------------------------------------------------------------------------------------

#[test]
fn prometheus_rule_has_the_same_groups_as_the_plain_rules_file() {
    let operator = yaml(PROMETHEUS_RULE);
    assert_eq!(
        operator["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(operator["kind"].as_str(), Some("PrometheusRule"));
    let theirs = list_of(&operator["spec"]["groups"], "spec.groups");
    let plain = yaml(RULES);
    let ours = list_of(&plain["groups"], "groups");
    assert_eq!(theirs.len(), ours.len(), "number of groups");
    for (a, b) in ours.iter().zip(theirs) {
        let group = a["name"].as_str().unwrap_or("?");
        // Rule by rule first, so a difference names its rule.
        let rules_a = list_of(&a["rules"], "rules");
        let rules_b = list_of(&b["rules"], "rules");
        for (ra, rb) in rules_a.iter().zip(rules_b) {
            let rule = ra["alert"]
                .as_str()
                .or(ra["record"].as_str())
                .unwrap_or("?");
            assert_eq!(
                ra, rb,
                "{PROMETHEUS_RULE} differs from {RULES} in {rule}; copy the groups over"
            );
        }
        assert_eq!(
            a, b,
            "{PROMETHEUS_RULE} differs from {RULES} in group {group}; copy the groups over"
        );
    }
}

#[test]
fn every_alert_has_a_severity_summary_description_and_one_line_runbook() {
    let mut names = BTreeSet::new();
    for rule in alert_rules() {
        let name = alert_name(&rule).to_string();
        assert!(names.insert(name.clone()), "two alerts named {name}");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook"] {
            let text = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(!text.trim().is_empty(), "{name}: no {key} annotation");
            assert!(!text.contains('\n'), "{name}: {key} is not one line");
        }
        // A runbook names what to run.
        let runbook = string_of(&rule["annotations"]["runbook"], "runbook");
        assert!(
            runbook.contains('`'),
            "{name}: the runbook names no command: {runbook}"
        );
    }
}

#[test]
fn every_alert_has_a_promtool_case_where_it_fires_and_one_where_it_does_not() {
    let tests = yaml(RULE_TESTS);
    // promtool resolves rule_files relative to the test file.
    let dir = std::path::Path::new(RULE_TESTS).parent().unwrap();
    let files: Vec<PathBuf> = list_of(&tests["rule_files"], "rule_files")
        .iter()
        .map(|f| dir.join(string_of(f, "rule_files")))
        .collect();
    assert_eq!(files, [PathBuf::from(RULES)], "{RULE_TESTS} rule_files");

    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in list_of(&tests["tests"], "tests") {
        for case in list_of(&test["alert_rule_test"], "alert_rule_test") {
            let name = string_of(&case["alertname"], "alertname").to_string();
            match case["exp_alerts"].as_vec() {
                Some(expected) if !expected.is_empty() => {
                    for alert in expected {
                        assert!(
                            alert["exp_labels"]["severity"].as_str().is_some(),
                            "{name}: a firing case must expect the exact labels"
                        );
                        assert!(
                            alert["exp_annotations"]["runbook"].as_str().is_some(),
                            "{name}: a firing case must expect the exact annotations"
                        );
                    }
                    fires.insert(name)
                }
                _ => quiet.insert(name),
            };
        }
    }
    for rule in alert_rules() {
        let name = alert_name(&rule);
        assert!(fires.contains(name), "{RULE_TESTS}: {name} never fires");
        assert!(
            quiet.contains(name),
            "{RULE_TESTS}: no case where {name} stays quiet"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The dashboard
// ---------------------------------------------------------------------------------------------

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not valid JSON: {e}"))
}

fn template_variable<'a>(dash: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{DASHBOARD}: no template variable {name:?}"))
}

#[test]
fn dashboard_panels_have_titles_and_queries_filtered_by_schema() {
    let dash = dashboard();
    let datasource = template_variable(&dash, "datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let schema = template_variable(&dash, "schema");
    assert_eq!(schema["type"], "query");
    assert!(
        schema["definition"]
            .as_str()
            .is_some_and(|d| d.contains("label_values(") && d.contains(", schema)")),
        "the schema variable lists the schema label: {schema}"
    );

    let panels = dash["panels"].as_array().expect("panels");
    assert!(!panels.is_empty(), "{DASHBOARD} has no panel");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "a panel has no title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "{title}: duplicate panel id"
        );
        let targets = panel["targets"].as_array().map(Vec::as_slice);
        let targets = targets.unwrap_or_default();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: a target has no expr");
            // Otherwise the schema picker would not apply to the panel.
            assert!(expr.contains("$schema"), "{title}: {expr} ignores $schema");
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{title}: queries the data source picked at the top"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Against a real worker's /metrics
// ---------------------------------------------------------------------------------------------

const METRIC_PREFIX: &str = "trace_summarizer_";

/// The `trace_summarizer_…` metric names in a PromQL expression.
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = expr[from..].find(METRIC_PREFIX) {
        let start = from + at;
        let len = expr[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(expr.len() - start);
        let inside_a_word = expr[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if !inside_a_word {
            names.insert(expr[start..start + len].to_string());
        }
        from = start + len;
    }
    names
}

/// Every string under an `expr`, `query` or `definition` key of the dashboard: the panels'
/// queries and the template variables'.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// The series names the rules and the dashboard query, and where each comes from.
fn queried_metrics() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rule in alert_rules() {
        for name in metric_names_in(string_of(&rule["expr"], "expr")) {
            out.push((name, format!("alert {}", alert_name(&rule))));
        }
    }
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    for q in queries {
        for name in metric_names_in(&q) {
            out.push((name, format!("dashboard query {q}")));
        }
    }
    assert!(
        out.len() > 10,
        "found too few metric names in the rules and the dashboard: {out:?}"
    );
    out
}

/// The exposition's samples as (series name, label text between the braces, if any).
fn samples(body: &str) -> Vec<(&str, &str)> {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            let labels = match (l.find('{'), l.rfind('}')) {
                (Some(open), Some(close)) if open == name_end => &l[open + 1..close],
                _ => "",
            };
            (&l[..name_end], labels)
        })
        .collect()
}

/// The value of the first sample of `name`.
fn sample_value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A worker on a fresh database (schema `public`) that leads and has absorbed new spans, so
/// series created on first use exist; and the port it serves on.
async fn busy_worker() -> (TestDb, Proc, u16) {
    let db = TestDb::new().await;
    load_history(&db, 1_000, 24, 1).await;
    db.cli_ok(&["install"]);
    let w = worker(&db.url, &["--interval", "200ms"]);
    let port = w.http_port(Duration::from_secs(20)).await;
    let mut spans = SpanGen::new(2);
    insert_spans(
        &db.client,
        &db.target,
        &spans.trace(Utc::now() - CD::seconds(1), 10),
    )
    .await
    .expect("insert new spans");
    eventually(
        Duration::from_secs(30),
        "the worker leads and counts the new spans",
        || async move {
            http_get(port, "/metrics").is_some_and(|(_, body)| {
                sample_value(&body, "trace_summarizer_leader") == Some(1.0)
                    && sample_value(&body, "trace_summarizer_spans_processed_total")
                        .is_some_and(|n| n >= 10.0)
            })
        },
    )
    .await;
    (db, w, port)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_rules_and_dashboard_query_is_served_by_the_worker() {
    let queried = queried_metrics();
    let (_db, _worker, port) = busy_worker().await;
    // A series may appear a little later than the others (on its first use): wait for all.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = http_get(port, "/metrics").expect("GET /metrics").1;
        let served: BTreeSet<&str> = samples(&body).into_iter().map(|(n, _)| n).collect();
        let missing: Vec<&(String, String)> = queried
            .iter()
            .filter(|(name, _)| !served.contains(name.as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let names: BTreeSet<&str> = missing.iter().map(|(n, _)| n.as_str()).collect();
            panic!(
                "queried but not served by /metrics: {names:?}\nwhere: {missing:#?}\n/metrics:\n{body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_served_metric_but_build_info_carries_the_schema_label() {
    let (db, _worker, port) = busy_worker().await;
    let body = http_get(port, "/metrics").expect("GET /metrics").1;
    let want = format!("schema=\"{}\"", db.target.schema);
    let mut unlabelled = BTreeSet::new();
    let mut labelled = 0;
    for (name, labels) in samples(&body) {
        if !name.starts_with(METRIC_PREFIX) || name == BUILD_INFO {
            continue;
        }
        // The alerts group by schema: a series without it would be summed across installations.
        if labels.split(',').any(|l| l == want) {
            labelled += 1;
        } else {
            unlabelled.insert(name);
        }
    }
    assert!(
        unlabelled.is_empty(),
        "served without {want}: {unlabelled:?}\n/metrics:\n{body}"
    );
    assert!(labelled > 10, "too few series served:\n{body}");
}
