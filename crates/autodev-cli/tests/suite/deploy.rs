//! `deploy/` checked offline with the tools each format has: `systemd-analyze verify` (and its
//! offline security score) for the units, `promtool` for the Prometheus configuration and alert
//! rules (with unit tests of the rules), the Compose specification's schema for compose.yaml,
//! the Kubernetes schemas (`kubernetes-validate --strict`) for deploy/k8s, hadolint for the
//! Dockerfile. Beyond the formats: every `autodev` command line in them parses with this
//! binary, every metric an alert reads is one Autodev exports, and the images and versions
//! agree with the workspace.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::output;

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn deploy() -> PathBuf {
    top().join("deploy")
}

/// The venv with check-jsonschema, kubernetes-validate and hadolint (`.ci/deploy-venv`).
fn venv_bin() -> PathBuf {
    let out = Command::new("bash").arg(top().join(".ci/deploy-venv")).output().unwrap();
    assert!(out.status.success(), "could not make the deploy venv: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn ok(cmd: &mut Command) -> String {
    let (code, stdout, stderr) = output(cmd);
    assert_eq!(code, 0, "{cmd:?} failed:\n{stdout}\n{stderr}");
    format!("{stdout}{stderr}")
}

/// Every `autodev` command line the deployment files start, as argument lists (YAML read by
/// the venv's PyYAML: the same parser the schema checks use).
fn yaml_commands(file: &Path, python: &Path) -> Vec<Vec<String>> {
    let script = r#"
import json, sys, yaml
found = []
def walk(node):
    if isinstance(node, dict):
        for key in ("command", "args"):
            v = node.get(key)
            if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
                found.append(v)
        for v in node.values():
            walk(v)
    elif isinstance(node, list):
        for v in node:
            walk(v)
for doc in yaml.safe_load_all(open(sys.argv[1])):
    walk(doc)
print(json.dumps(found))
"#;
    let out = ok(Command::new(python).args(["-c", script]).arg(file));
    serde_json::from_str(out.trim()).unwrap()
}

/// The command line parses with this binary: clap refuses an unknown flag or a bad value
/// before it reaches `--help`.
fn parses(args: &[String], from: &str) {
    let (code, stdout, stderr) = output(Command::new(env!("CARGO_BIN_EXE_autodev")).args(args).arg("--help"));
    assert_eq!(code, 0, "{from}: `autodev {}` does not parse:\n{stdout}{stderr}", args.join(" "));
}

#[test]
fn systemd_units_verify_and_are_hardened() {
    autodev_testkit::require_program("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_autodev");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(deploy().join("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        // The units name the installed path; verify checks that it exists and is executable.
        let text = std::fs::read_to_string(&path).unwrap().replace("/usr/local/bin/autodev", bin);
        for line in text.lines().filter(|l| l.starts_with("ExecStart")) {
            let cmd = line.split_once('=').unwrap().1;
            if let Some(rest) = cmd.strip_prefix(bin) {
                let args: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
                parses(&args, &name);
            }
        }
        std::fs::write(dir.path().join(&name), text).unwrap();
        units.push(dir.path().join(&name));
    }
    assert!(units.len() >= 3, "deploy/systemd holds the service, the backup service and its timer");
    let (code, stdout, stderr) = output(Command::new("systemd-analyze").args(["verify", "--man=no"]).args(&units));
    assert!(code == 0 && stderr.trim().is_empty(), "systemd-analyze verify:\n{stdout}{stderr}");

    let service = dir.path().join("autodev.service");
    let text = std::fs::read_to_string(&service).unwrap();
    for line in ["NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/autodev", "PrivateTmp=yes"] {
        assert!(text.lines().any(|l| l == line), "autodev.service lacks {line}");
    }
    assert!(text.contains("DynamicUser=yes") && text.contains("User=autodev"), "a dedicated user");
    // systemd's own exposure score (0 safest, 10 unsafe): hardened as far as bubblewrap allows.
    let out = ok(Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&service));
    let score: f64 = out
        .lines()
        .find_map(|l| l.split("Overall exposure level for autodev.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(score <= 5.0, "exposure {score} > 5.0:\n{out}");
}

/// Metric names Autodev's sources export (string literals `"autodev_…"`).
fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![top().join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && path.components().any(|c| c.as_os_str() == "src") {
                let text = std::fs::read_to_string(&path).unwrap();
                for part in text.split("\"autodev_").skip(1) {
                    let name: String = part.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    if part[name.len()..].starts_with('"') {
                        names.insert(format!("autodev_{name}"));
                    }
                }
            }
        }
    }
    names
}

#[test]
fn prometheus_config_and_alert_rules_pass_promtool_and_read_real_metrics() {
    autodev_testkit::require_program("promtool", "prometheus");
    let prom = deploy().join("prometheus");
    ok(Command::new("promtool").args(["check", "config"]).arg(prom.join("prometheus.yml")));
    ok(Command::new("promtool").args(["check", "rules"]).arg(prom.join("alerts.yml")));
    // The rules fire on the series they are meant for (promtool's rule unit tests).
    let out = ok(Command::new("promtool").args(["test", "rules"]).arg(prom.join("alerts_test.yml")));
    assert!(out.contains("SUCCESS"), "{out}");

    let exported = exported_metrics();
    assert!(exported.contains("autodev_queue_depth"), "{exported:?}");
    let mut files = vec![prom.join("alerts.yml"), deploy().join("k8s/adapter/prometheus-adapter-values.yaml")];
    files.push(deploy().join("k8s/40-worker.yaml"));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for part in text.split("autodev_").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            let name = format!("autodev_{name}");
            assert!(exported.contains(&name), "{} reads {name}, which Autodev does not export", file.display());
        }
    }
}

#[test]
fn compose_file_matches_the_compose_specification_and_its_commands_parse() {
    let bin = venv_bin();
    let compose = deploy().join("compose.yaml");
    ok(Command::new(bin.join("check-jsonschema")).args(["--builtin-schema", "vendor.compose-spec"]).arg(&compose));
    let commands = yaml_commands(&compose, &bin.join("python"));
    let text = std::fs::read_to_string(&compose).unwrap();
    for needed in ["  postgres:", "  prometheus:", "  worker:", "./prometheus:/etc/prometheus"] {
        assert!(text.contains(needed), "compose.yaml lacks {needed}");
    }
    let autodev: Vec<_> = commands.iter().filter(|c| c[0] == "serve" || c[0] == "worker").collect();
    assert!(autodev.iter().any(|c| c[0] == "serve") && autodev.iter().any(|c| c[0] == "worker"), "{commands:?}");
    for c in autodev {
        parses(c, "compose.yaml");
    }
    // Every secret a service names is declared, and its file (or an example of it) is in the repository.
    for name in ["database_url", "key_pepper", "postgres_password"] {
        assert!(text.contains(&format!("file: secrets/{name}")), "secret {name}");
        let dir = deploy().join("secrets");
        assert!(dir.join(name).exists() || dir.join(format!("{name}.example")).exists(), "secrets/{name}.example");
    }
}

#[test]
fn kubernetes_manifests_validate_against_the_schemas_and_their_commands_parse() {
    let bin = venv_bin();
    let dir = deploy().join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let out = ok(Command::new(bin.join("kubernetes-validate")).args(["--strict"]).args(&files));
    for kind in
        ["deployment/autodev-server", "deployment/autodev-worker", "poddisruptionbudget/", "horizontalpodautoscaler/"]
    {
        assert!(out.contains(kind), "no {kind} in deploy/k8s:\n{out}");
    }
    let mut all = String::new();
    for file in &files {
        all.push_str(&std::fs::read_to_string(file).unwrap());
        for c in yaml_commands(file, &bin.join("python")) {
            parses(&c, &file.display().to_string());
        }
    }
    for needed in
        ["path: /health", "path: /ready", "_FILE: /run/secrets/autodev/", "secretName: autodev", "autodev_queue_depth"]
    {
        assert!(all.contains(needed), "deploy/k8s lacks {needed}");
    }
    // No secret is put in a pod's environment: values come through `_FILE` paths.
    assert!(!all.contains("secretKeyRef"), "secrets are mounted as files, not variables");
}

#[test]
fn dockerfile_passes_hadolint_and_builds_with_the_workspace_toolchain() {
    let bin = venv_bin();
    let dockerfile = deploy().join("Dockerfile");
    ok(Command::new(bin.join("hadolint")).arg(&dockerfile));
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    // The builder's Rust is at least the workspace's rust-version.
    let manifest = std::fs::read_to_string(top().join("Cargo.toml")).unwrap();
    let wanted = manifest.lines().find_map(|l| l.strip_prefix("rust-version = \"")).unwrap().trim_end_matches('"');
    let image = text.lines().find_map(|l| l.strip_prefix("FROM rust:")).expect("a rust builder stage");
    let have = image.split(['-', ' ']).next().unwrap();
    let v = |s: &str| s.split('.').map(|p| p.parse::<u32>().unwrap()).collect::<Vec<_>>();
    assert!(v(have) >= v(wanted), "rust:{have} is older than rust-version {wanted}");
    assert!(text.matches("\nFROM ").count() + usize::from(text.starts_with("FROM ")) >= 2, "multi-stage");
    for needed in ["git", "bubblewrap", "USER 10001", "--locked", "-p autodev-cli"] {
        assert!(text.contains(needed), "the Dockerfile lacks {needed}");
    }
    let ignore = std::fs::read_to_string(top().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target"), ".dockerignore keeps target/ out of the build context");
}
