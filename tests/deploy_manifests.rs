//! Static checks of everything under `deploy/` (plus `/.dockerignore`).
//!
//! No kubectl, helm, docker or systemd is needed: every YAML file is parsed (multi-document
//! aware) with yaml-rust2 and the properties the deployment relies on are asserted directly.
//! The commands the manifests run are parsed with the real clap definition in `src/cli.rs`,
//! so a renamed flag or subcommand breaks this test rather than a rollout.
//!
//! Run: `cargo test --test deploy_manifests`

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

// The CLI definition itself (it depends on clap and std only), so the test checks the deploy
// files against the flags the binary really accepts.
#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const CLUSTER: &str = "pg-main";
const WORKER_CONTAINER: &str = "trace-summarizer";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// The Helm chart's directory. Its templates are not plain YAML, and its other YAML files
/// (Chart.yaml, values, the copied rules file) are not Kubernetes objects: tests/helm_chart.rs
/// renders and checks the chart with Helm.
fn helm_dir() -> PathBuf {
    deploy_dir().join("helm")
}

/// The manifests: every YAML file under deploy/ but `prometheus/`, which holds a plain Prometheus
/// rules file and its promtool tests, not Kubernetes objects (tests/alerting.rs checks those),
/// and `helm/` (see helm_dir).
fn yaml_files() -> Vec<PathBuf> {
    let mut all = Vec::new();
    files_under(&deploy_dir(), &mut all);
    let prometheus = deploy_dir().join("prometheus");
    all.retain(|p| is_yaml(p) && !p.starts_with(&prometheus) && !p.starts_with(helm_dir()));
    all
}

/// The chart's YAML files outside `templates/` (Go templates, not YAML).
fn helm_plain_yaml_files() -> Vec<PathBuf> {
    let mut all = Vec::new();
    files_under(&helm_dir(), &mut all);
    all.retain(|p| {
        is_yaml(p)
            && !p
                .strip_prefix(helm_dir())
                .unwrap()
                .components()
                .any(|c| c.as_os_str() == "templates")
    });
    all
}

/// One YAML document and the file it came from.
struct Doc {
    file: PathBuf,
    yaml: Yaml,
}

/// Every non-empty document of every YAML file under deploy/.
fn docs() -> Vec<Doc> {
    let mut out = Vec::new();
    for file in yaml_files() {
        let text = read(&file);
        let parsed = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
        for yaml in parsed {
            // `---` followed by nothing yields a Null document; it is not an object.
            if !yaml.is_null() {
                out.push(Doc {
                    file: file.clone(),
                    yaml,
                });
            }
        }
    }
    out
}

fn of_kind(kind: &str) -> Vec<Doc> {
    docs()
        .into_iter()
        .filter(|d| d.yaml["kind"].as_str() == Some(kind))
        .collect()
}

fn the_one(kind: &str) -> Doc {
    let mut found = of_kind(kind);
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind} under deploy/, found {}",
        found.len()
    );
    found.remove(0)
}

fn deployment() -> Yaml {
    the_one("Deployment").yaml
}

fn install_job() -> Yaml {
    the_one("Job").yaml
}

/// The workloads that connect to PostgreSQL: the Deployment and the install Job.
fn workloads() -> Vec<(&'static str, Yaml)> {
    vec![("Deployment", deployment()), ("Job", install_job())]
}

fn pod_spec(workload: &Yaml) -> &Yaml {
    &workload["spec"]["template"]["spec"]
}

fn named<'a>(list: &'a Yaml, name: &str) -> &'a Yaml {
    list.as_vec()
        .unwrap_or_else(|| panic!("expected a list looking for {name:?}, got {list:?}"))
        .iter()
        .find(|item| item["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no entry named {name:?} in {list:?}"))
}

fn worker_container() -> Yaml {
    named(&pod_spec(&deployment())["containers"], WORKER_CONTAINER).clone()
}

/// The single container of a workload's pod.
fn only_container(workload: &Yaml) -> &Yaml {
    let containers = pod_spec(workload)["containers"]
        .as_vec()
        .expect("containers list");
    assert_eq!(containers.len(), 1, "expected one container");
    &containers[0]
}

fn env_value<'a>(container: &'a Yaml, name: &str) -> &'a Yaml {
    named(&container["env"], name)
}

fn str_list(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap_or_else(|| panic!("expected a list, got {y:?}"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
                .to_string()
        })
        .collect()
}

/// True if every `matchLabels` pair of `selector` is among `labels`.
fn selector_matches(selector: &Yaml, labels: &Yaml) -> bool {
    let wanted = selector["matchLabels"]
        .as_hash()
        .expect("selector.matchLabels");
    assert!(!wanted.is_empty(), "empty selector matches everything");
    wanted
        .iter()
        .all(|(k, v)| labels[k.as_str().unwrap()] == *v)
}

fn worker_pod_labels() -> Yaml {
    deployment()["spec"]["template"]["metadata"]["labels"].clone()
}

/// `Key=value` lines of one section of a systemd unit, in order (keys may repeat).
fn unit_section(unit: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            current = line[1..line.len() - 1].to_string();
            continue;
        }
        if current == section {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    out
}

fn unit_values(entries: &[(String, String)], key: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The last value of a (non-repeatable) directive: systemd lets later lines win.
fn unit_value(entries: &[(String, String)], key: &str) -> Option<String> {
    unit_values(entries, key).pop()
}

fn service_section() -> Vec<(String, String)> {
    unit_section(
        &read(&deploy_dir().join("systemd/trace-summarizer.service")),
        "Service",
    )
}

fn dockerfile() -> String {
    read(&deploy_dir().join("Dockerfile"))
}

/// Dockerfile instructions (continuation lines joined), as (INSTRUCTION, arguments).
fn dockerfile_instructions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in dockerfile().lines() {
        let t = line.trim();
        if pending.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(stripped) = t.strip_suffix('\\') {
            pending.push_str(stripped);
            pending.push(' ');
            continue;
        }
        pending.push_str(t);
        let full = std::mem::take(&mut pending);
        let (instr, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        out.push((instr.to_ascii_uppercase(), args.trim().to_string()));
    }
    out
}

/// The exec-form (JSON array) arguments of a Dockerfile instruction.
fn dockerfile_exec_form(instr: &str) -> Vec<String> {
    let (_, args) = dockerfile_instructions()
        .into_iter()
        .rev()
        .find(|(i, _)| i == instr)
        .unwrap_or_else(|| panic!("Dockerfile has no {instr}"));
    serde_json::from_str(&args)
        .unwrap_or_else(|e| panic!("{instr} must use the exec (JSON) form, got {args:?}: {e}"))
}

fn parse_cli(args: &[String]) -> Result<cli::Cli, clap::Error> {
    use clap::Parser;
    let argv = std::iter::once("trace-summarizer".to_string()).chain(args.iter().cloned());
    cli::Cli::try_parse_from(argv)
}

// ---------------------------------------------------------------------------------------------
// Every file
// ---------------------------------------------------------------------------------------------

#[test]
fn every_yaml_file_under_deploy_parses_into_kubernetes_objects() {
    let files = yaml_files();
    assert!(
        files.len() >= 8,
        "expected the kubernetes/ manifests and cnpg-cluster.yaml, got {files:?}"
    );
    let all = docs();
    for file in &files {
        assert!(
            all.iter().any(|d| &d.file == file),
            "{} holds no document",
            file.display()
        );
    }
    for d in &all {
        let where_ = d.file.display();
        assert!(d.yaml.is_hash(), "{where_}: a document is not a mapping");
        let api = d.yaml["apiVersion"]
            .as_str()
            .unwrap_or_else(|| panic!("{where_}: no apiVersion"));
        let kind = d.yaml["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{where_}: no kind"));
        assert!(
            !api.is_empty() && !kind.is_empty(),
            "{where_}: empty apiVersion or kind"
        );
        if kind != "Kustomization" {
            assert!(
                d.yaml["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty()),
                "{where_}: {kind} has no metadata.name"
            );
        }
    }
}

#[test]
fn helm_chart_yaml_files_outside_templates_parse() {
    let files = helm_plain_yaml_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["Chart.yaml", "values.yaml", "values-serviceradar.yaml"] {
        assert!(
            names.iter().any(|n| n == expected),
            "no {expected} under deploy/helm: {names:?}"
        );
    }
    for file in files {
        let docs = YamlLoader::load_from_str(&read(&file))
            .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
        assert!(
            docs.iter().any(|d| d.is_hash()),
            "{} holds no mapping",
            file.display()
        );
    }
}

#[test]
fn kustomization_resources_all_exist() {
    let k = the_one("Kustomization");
    let dir = k.file.parent().unwrap().to_path_buf();
    let resources = str_list(&k.yaml["resources"]);
    assert!(!resources.is_empty());
    for r in &resources {
        assert!(
            dir.join(r).is_file(),
            "kustomization lists {r}, which does not exist in {}",
            dir.display()
        );
    }
}

#[test]
fn kustomization_lists_every_manifest_except_the_one_shot_install_job() {
    let k = the_one("Kustomization");
    let dir = k.file.parent().unwrap().to_path_buf();
    let listed: BTreeSet<String> = str_list(&k.yaml["resources"]).into_iter().collect();
    let job_file = the_one("Job").file;
    assert_eq!(
        job_file.parent().unwrap(),
        dir,
        "the install Job lives beside the kustomization"
    );
    let job_name = job_file.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        !listed.contains(&job_name),
        "the install Job must not run on every `apply -k`"
    );
    for file in yaml_files()
        .into_iter()
        .filter(|f| f.parent() == Some(dir.as_path()))
    {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        if name == "kustomization.yaml" || name == job_name {
            continue;
        }
        assert!(
            listed.contains(&name),
            "{name} is not listed in kustomization.yaml"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Deployment
// ---------------------------------------------------------------------------------------------

#[test]
fn deployment_runs_two_replicas() {
    assert_eq!(deployment()["spec"]["replicas"].as_i64(), Some(2));
}

#[test]
fn deployment_probes_livez_for_liveness_and_readyz_for_readiness_on_metrics_port() {
    let c = worker_container();
    let live = &c["livenessProbe"]["httpGet"];
    let ready = &c["readinessProbe"]["httpGet"];
    assert_eq!(live["path"].as_str(), Some("/livez"));
    assert_eq!(ready["path"].as_str(), Some("/readyz"));
    assert_eq!(live["port"].as_str(), Some("metrics"));
    assert_eq!(ready["port"].as_str(), Some("metrics"));
}

#[test]
fn deployment_serves_metrics_port_9466_and_listens_on_it() {
    let c = worker_container();
    let port = named(&c["ports"], "metrics");
    assert_eq!(port["containerPort"].as_i64(), Some(9466));
    let args = str_list(&c["args"]);
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| args[i + 1].as_str());
    assert_eq!(
        listen,
        Some("0.0.0.0:9466"),
        "run must serve on all interfaces for probes: {args:?}"
    );
    assert_eq!(args.first().map(String::as_str), Some("run"));
}

#[test]
fn workloads_read_database_url_from_cnpg_app_secret_uri() {
    for (what, w) in workloads() {
        let r = &env_value(only_container(&w), "DATABASE_URL")["valueFrom"]["secretKeyRef"];
        assert_eq!(
            r["name"].as_str(),
            Some(format!("{CLUSTER}-app").as_str()),
            "{what}"
        );
        assert_eq!(r["key"].as_str(), Some("uri"), "{what}");
    }
}

#[test]
fn workloads_verify_postgres_tls_against_the_mounted_cluster_ca_only() {
    for (what, w) in workloads() {
        let c = only_container(&w);
        assert_eq!(
            env_value(c, "PGSSLMODE")["value"].as_str(),
            Some("verify-full"),
            "{what}"
        );
        let root_cert = env_value(c, "PGSSLROOTCERT")["value"]
            .as_str()
            .expect("PGSSLROOTCERT value");

        // The mount holding PGSSLROOTCERT is read-only and comes from the `<cluster>-ca` secret.
        let mount = c["volumeMounts"]
            .as_vec()
            .expect("volumeMounts")
            .iter()
            .find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|p| root_cert == format!("{p}/ca.crt"))
            })
            .unwrap_or_else(|| panic!("{what}: no volume mounted at the directory of {root_cert}"));
        assert_eq!(
            mount["readOnly"].as_bool(),
            Some(true),
            "{what}: CA mount must be readOnly"
        );
        let volume = named(&pod_spec(&w)["volumes"], mount["name"].as_str().unwrap());
        assert_eq!(
            volume["secret"]["secretName"].as_str(),
            Some(format!("{CLUSTER}-ca").as_str()),
            "{what}"
        );

        // Only ca.crt: the same secret holds the CA's private key.
        let items = volume["secret"]["items"]
            .as_vec()
            .expect("secret items restrict the mount to ca.crt");
        let keys: Vec<_> = items
            .iter()
            .map(|i| (i["key"].as_str(), i["path"].as_str()))
            .collect();
        assert_eq!(keys, vec![(Some("ca.crt"), Some("ca.crt"))], "{what}");
    }
}

#[test]
fn workloads_run_as_non_root_with_read_only_root_filesystem() {
    for (what, w) in workloads() {
        let pod = &pod_spec(&w)["securityContext"];
        let c = &only_container(&w)["securityContext"];
        assert!(
            pod["runAsNonRoot"].as_bool() == Some(true)
                || c["runAsNonRoot"].as_bool() == Some(true),
            "{what}: runAsNonRoot"
        );
        if let Some(uid) = pod["runAsUser"].as_i64().or(c["runAsUser"].as_i64()) {
            assert_ne!(uid, 0, "{what}: runAsUser 0");
        }
        assert_eq!(c["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}");
        assert_eq!(
            c["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{what}"
        );
        assert!(
            str_list(&c["capabilities"]["drop"]).contains(&"ALL".to_string()),
            "{what}: drop ALL"
        );
        let seccomp = pod["seccompProfile"]["type"]
            .as_str()
            .or(c["seccompProfile"]["type"].as_str());
        assert_eq!(seccomp, Some("RuntimeDefault"), "{what}");
    }
}

#[test]
fn deployment_grace_period_outlasts_a_cycle() {
    let grace = pod_spec(&deployment())["terminationGracePeriodSeconds"].as_i64();
    assert!(
        grace.is_some_and(|g| g >= 30),
        "terminationGracePeriodSeconds = {grace:?}"
    );
}

#[test]
fn workloads_log_json() {
    for (what, w) in workloads() {
        assert_eq!(
            env_value(only_container(&w), "LOG_FORMAT")["value"].as_str(),
            Some("json"),
            "{what}"
        );
    }
}

#[test]
fn deployment_sets_cpu_and_memory_requests_and_limits() {
    let r = &worker_container()["resources"];
    for section in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !r[section][resource].is_badvalue(),
                "resources.{section}.{resource} missing"
            );
        }
    }
}

#[test]
fn deployment_keeps_a_standby_during_rollouts() {
    let ru = &deployment()["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(ru["maxUnavailable"].as_i64(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// PDB, Service, PodMonitor
// ---------------------------------------------------------------------------------------------

#[test]
fn pod_disruption_budget_keeps_one_worker_available() {
    let pdb = the_one("PodDisruptionBudget").yaml;
    assert_eq!(pdb["apiVersion"].as_str(), Some("policy/v1"));
    assert_eq!(pdb["spec"]["minAvailable"].as_i64(), Some(1));
    assert!(selector_matches(
        &pdb["spec"]["selector"],
        &worker_pod_labels()
    ));
}

#[test]
fn pod_monitor_scrapes_metrics_path_on_worker_pods() {
    let pm = the_one("PodMonitor").yaml;
    assert_eq!(pm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert!(selector_matches(
        &pm["spec"]["selector"],
        &worker_pod_labels()
    ));
    let endpoints = pm["spec"]["podMetricsEndpoints"]
        .as_vec()
        .expect("podMetricsEndpoints");
    assert!(
        endpoints.iter().any(
            |e| e["port"].as_str() == Some("metrics") && e["path"].as_str() == Some("/metrics")
        ),
        "no endpoint scrapes port `metrics` at /metrics"
    );
}

#[test]
fn service_targets_metrics_port_of_worker_pods() {
    let svc = the_one("Service").yaml;
    let labels = worker_pod_labels();
    let wanted = svc["spec"]["selector"].as_hash().expect("service selector");
    assert!(wanted
        .iter()
        .all(|(k, v)| labels[k.as_str().unwrap()] == *v));
    let port = named(&svc["spec"]["ports"], "metrics");
    assert_eq!(port["port"].as_i64(), Some(9466));
    assert_eq!(port["targetPort"].as_str(), Some("metrics"));
}

#[test]
fn worker_selectors_exclude_install_job_pods() {
    // Otherwise the PDB would count a finished install pod and Prometheus would scrape it.
    let job_labels = install_job()["spec"]["template"]["metadata"]["labels"].clone();
    let d = deployment();
    assert!(!selector_matches(&d["spec"]["selector"], &job_labels));
    assert!(!selector_matches(
        &the_one("PodDisruptionBudget").yaml["spec"]["selector"],
        &job_labels
    ));
    assert!(!selector_matches(
        &the_one("PodMonitor").yaml["spec"]["selector"],
        &job_labels
    ));
}

// ---------------------------------------------------------------------------------------------
// Install Job
// ---------------------------------------------------------------------------------------------

#[test]
fn install_job_runs_install_incremental_without_restarting_in_place() {
    let job = install_job();
    assert_eq!(
        str_list(&only_container(&job)["args"]),
        ["install", "--mode", "incremental"]
    );
    let restart = pod_spec(&job)["restartPolicy"].as_str();
    assert!(
        matches!(restart, Some("Never" | "OnFailure")),
        "restartPolicy = {restart:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// CloudNativePG cluster
// ---------------------------------------------------------------------------------------------

#[test]
fn cnpg_cluster_preloads_pg_cron_in_the_application_database() {
    let c = the_one("Cluster").yaml;
    assert_eq!(c["apiVersion"].as_str(), Some("postgresql.cnpg.io/v1"));
    assert_eq!(c["metadata"]["name"].as_str(), Some(CLUSTER));
    let pg = &c["spec"]["postgresql"];
    assert!(str_list(&pg["shared_preload_libraries"]).contains(&"pg_cron".to_string()));
    let db = c["spec"]["bootstrap"]["initdb"]["database"]
        .as_str()
        .expect("initdb.database");
    assert_eq!(db, "app");
    assert_eq!(pg["parameters"]["cron.database_name"].as_str(), Some(db));
    let sql = str_list(&c["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"]);
    assert!(
        sql.iter()
            .any(|s| s.eq_ignore_ascii_case("CREATE EXTENSION IF NOT EXISTS pg_cron")),
        "{sql:?}"
    );
}

#[test]
fn cnpg_cluster_grants_the_app_role_what_install_and_run_need() {
    let c = the_one("Cluster").yaml;
    let owner = c["spec"]["bootstrap"]["initdb"]["owner"]
        .as_str()
        .expect("initdb.owner");
    let sql = str_list(&c["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"]);
    let want = format!("GRANT USAGE ON SCHEMA cron TO {owner}");
    assert!(
        sql.iter().any(|s| s.eq_ignore_ascii_case(&want)),
        "missing {want:?} in {sql:?}"
    );
    // The worker reads no other session's activity any more: no role membership to grant.
    assert!(
        !sql.iter().any(|s| s.contains("pg_read_all_stats")),
        "{sql:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------------

#[test]
fn dockerfile_builds_in_two_stages_and_runs_as_non_root() {
    let instrs = dockerfile_instructions();
    let froms: Vec<&String> = instrs
        .iter()
        .filter(|(i, _)| i == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "expected a builder and a runtime stage: {froms:?}"
    );
    assert!(
        froms[0].starts_with("rust:1-bookworm"),
        "builder: {}",
        froms[0]
    );
    let runtime = froms[1];
    // The USER in force at the end of the runtime stage (the builder's does not matter).
    let runtime_start = instrs.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let user = instrs[runtime_start..]
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .map(|(_, a)| a.as_str());
    let root_user = user.is_some_and(|u| {
        let name = u.split(':').next().unwrap();
        name == "root" || name == "0"
    });
    assert!(!root_user, "runtime USER is root: {user:?}");
    assert!(
        user.is_some() || runtime.contains("nonroot"),
        "runtime stage must set a non-root USER or use a nonroot base: {runtime}"
    );
}

#[test]
fn dockerfile_builds_locked_release_and_defaults_to_run_with_metrics() {
    let instrs = dockerfile_instructions();
    assert!(
        instrs
            .iter()
            .any(|(i, a)| i == "RUN"
                && a.contains("cargo build --release --locked --no-default-features")),
        "the builder must run `cargo build --release --locked --no-default-features` (the product without the lab)"
    );
    let entry = dockerfile_exec_form("ENTRYPOINT");
    assert_eq!(entry.len(), 1);
    assert!(
        entry[0].ends_with("/trace-summarizer"),
        "ENTRYPOINT {entry:?}"
    );
    // The binary is copied to the path ENTRYPOINT runs.
    assert!(
        instrs
            .iter()
            .any(|(i, a)| i == "COPY" && a.contains("--from=") && a.ends_with(&entry[0])),
        "no COPY --from=builder to {}",
        entry[0]
    );
    assert_eq!(
        dockerfile_exec_form("CMD"),
        ["run", "--listen", "0.0.0.0:9466"]
    );
    assert!(instrs
        .iter()
        .any(|(i, a)| i == "EXPOSE" && a.split_whitespace().any(|p| p == "9466")));
}

#[test]
fn dockerignore_excludes_target_and_git() {
    let text = read(&repo_root().join(".dockerignore"));
    let patterns: BTreeSet<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/'))
        .collect();
    assert!(patterns.contains("target"), "{patterns:?}");
    assert!(patterns.contains(".git"), "{patterns:?}");
}

// ---------------------------------------------------------------------------------------------
// systemd
// ---------------------------------------------------------------------------------------------

#[test]
fn systemd_unit_is_hardened() {
    let s = service_section();
    let v = |k: &str| unit_value(&s, k);
    assert_eq!(v("NoNewPrivileges").as_deref(), Some("yes"));
    assert_eq!(v("ProtectSystem").as_deref(), Some("strict"));
    for key in [
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "MemoryDenyWriteExecute",
        "LockPersonality",
    ] {
        assert_eq!(v(key).as_deref(), Some("yes"), "{key}");
    }
    let families: BTreeSet<String> = unit_values(&s, "RestrictAddressFamilies")
        .iter()
        .flat_map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let want: BTreeSet<String> = ["AF_INET", "AF_INET6", "AF_UNIX"].map(String::from).into();
    assert_eq!(families, want);
    assert!(unit_values(&s, "SystemCallFilter")
        .iter()
        .any(|f| f.split_whitespace().any(|x| x == "@system-service")));
    assert_eq!(
        v("CapabilityBoundingSet").as_deref(),
        Some(""),
        "empty bounding set: no capabilities"
    );
    let dynamic = v("DynamicUser").as_deref() == Some("yes");
    let user = v("User");
    assert!(
        dynamic || user.as_deref().is_some_and(|u| u != "root" && u != "0"),
        "needs DynamicUser=yes or a dedicated User"
    );
}

#[test]
fn systemd_unit_restarts_and_stops_within_grace_period() {
    let s = service_section();
    let v = |k: &str| unit_value(&s, k);
    assert_eq!(v("Restart").as_deref(), Some("always"));
    assert_eq!(v("TimeoutStopSec").as_deref(), Some("30"));
    assert_eq!(v("KillSignal").as_deref(), Some("SIGTERM"));
    assert_eq!(
        v("EnvironmentFile").as_deref(),
        Some("/etc/trace-summarizer/env")
    );
    let exec = v("ExecStart").expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert!(
        words
            .next()
            .is_some_and(|b| b.ends_with("/trace-summarizer")),
        "{exec}"
    );
    assert_eq!(words.next(), Some("run"), "{exec}");
}

// ---------------------------------------------------------------------------------------------
// Against the real CLI
// ---------------------------------------------------------------------------------------------

#[test]
fn deploy_commands_are_accepted_by_the_cli() {
    let mut commands: Vec<(String, Vec<String>)> = vec![
        (
            "Deployment args".into(),
            str_list(&worker_container()["args"]),
        ),
        (
            "install Job args".into(),
            str_list(&only_container(&install_job())["args"]),
        ),
        ("Dockerfile CMD".into(), dockerfile_exec_form("CMD")),
        // The rollback documented in README.md and job-install.yaml.
        (
            "rollback".into(),
            vec!["install".into(), "--mode".into(), "mv".into()],
        ),
    ];
    let exec = unit_value(&service_section(), "ExecStart").unwrap();
    commands.push((
        "systemd ExecStart".into(),
        exec.split_whitespace().skip(1).map(String::from).collect(),
    ));
    for (what, args) in commands {
        if let Err(e) = parse_cli(&args) {
            panic!("{what} {args:?} is rejected by the CLI:\n{e}");
        }
    }
}

#[test]
fn environment_variables_in_deploy_files_are_ones_the_binary_reads() {
    use clap::CommandFactory;
    // Flags' env fallbacks, from the clap definition (global and per-subcommand).
    let mut known: BTreeSet<String> = BTreeSet::new();
    let root = cli::Cli::command();
    let mut stack = vec![root];
    while let Some(cmd) = stack.pop() {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                known.insert(env.to_string_lossy().into_owned());
            }
        }
        stack.extend(cmd.get_subcommands().cloned());
    }
    // libpq variables, honoured by the connection code (see --help).
    for v in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGAPPNAME",
    ] {
        known.insert(v.to_string());
    }

    let mut used: Vec<(String, String)> = Vec::new();
    for (what, w) in workloads() {
        for e in only_container(&w)["env"].as_vec().expect("env") {
            used.push((what.to_string(), e["name"].as_str().unwrap().to_string()));
        }
    }
    for value in unit_values(&service_section(), "Environment") {
        let name = value.split_once('=').expect("Environment=NAME=value").0;
        used.push(("systemd unit".into(), name.to_string()));
    }
    for line in read(&deploy_dir().join("systemd/env.example")).lines() {
        // Commented-out settings count too: they are offered to the operator.
        let line = line.trim().trim_start_matches('#');
        if let Some((name, _)) = line.split_once('=') {
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                used.push(("env.example".into(), name.to_string()));
            }
        }
    }
    assert!(used.len() > 5, "found too few variables: {used:?}");
    for (what, name) in used {
        assert!(
            known.contains(&name),
            "{what} sets {name}, which trace-summarizer does not read"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// README
// ---------------------------------------------------------------------------------------------

#[test]
fn readme_documents_every_deploy_file_and_the_least_privilege_grants() {
    let readme = read(&deploy_dir().join("README.md"));
    let mut files = Vec::new();
    files_under(&deploy_dir(), &mut files);
    for f in files {
        let rel = f
            .strip_prefix(deploy_dir())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if rel == "README.md" {
            continue;
        }
        assert!(
            readme.contains(&format!("`{rel}`")),
            "deploy/README.md does not describe `{rel}`"
        );
    }
    for needle in [
        "docker build -f deploy/Dockerfile .",
        "GRANT SELECT ON platform.otel_traces",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON platform.otel_trace_summaries",
        "GRANT USAGE ON SCHEMA trace_summarizer",
        "GRANT ALL ON ALL TABLES IN SCHEMA trace_summarizer",
        "TEMPORARY ON DATABASE",
        "--adopt",
        "install --mode incremental",
        "install --mode mv",
        "/livez",
        "/readyz",
        "/metrics",
        "promtool test rules deploy/prometheus/trace-summarizer.rules.test.yaml",
    ] {
        assert!(
            readme.contains(needle),
            "deploy/README.md does not mention {needle:?}"
        );
    }
}
