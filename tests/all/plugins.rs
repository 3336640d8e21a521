//! WASI verifier plugins: real components built by the build, run by the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A test component built from plugins/<name> by the build script.
fn built(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("plugins/target/wasm32-wasip2/release/{file}.wasm"))
}

/// `plugin run` with a policy and a private cache; returns the run.
fn plugin_run(
    repo: &TestRepo,
    plugin: &str,
    config: &str,
    policy: Option<&str>,
    env: &[(&str, &str)],
) -> Run {
    let mut args = vec![
        "plugin".to_string(),
        "run".into(),
        plugin.into(),
        "--config".into(),
        config.into(),
        "--json".into(),
    ];
    if let Some(text) = policy {
        let path = repo.path().with_extension("plugin-policy.yml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        args.extend(["--policy".to_string(), path.display().to_string()]);
    }
    let cache = repo.path().with_extension("cache");
    let mut cmd = Command::new(BIN);
    cmd.args(&args)
        .current_dir(repo.path())
        .env("XDG_CACHE_HOME", &cache);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap_or_else(|e| panic!("{e}")))
}

fn probe(
    repo: &TestRepo,
    config: &str,
    policy: Option<&str>,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let run = plugin_run(
        repo,
        built("probe").to_str().unwrap_or_default(),
        config,
        policy,
        env,
    );
    assert!(
        run.code == 0 || run.code == 3,
        "code {}: {}",
        run.code,
        run.stderr
    );
    run.json()
}

const BASE_POLICY: &str = "defaults:\n  filesystem:\n    read: [system, toolchains]\n    write: [repo, tmp]\n  env: [PATH]\n";

#[test]
fn example_pipeline_with_every_builtin_plugin_passes() {
    let repo = TestRepo::example("demo-repo");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let pipeline = examples.join("pipeline.plugins.yml").display().to_string();
    let policy = examples.join("policy-plugins.yml").display().to_string();
    let run = repo.run(&[
        "verify",
        "--repo",
        ".",
        "--pipeline",
        &pipeline,
        "--policy",
        &policy,
        "--json",
    ]);
    run.expect_code(0);
    let json = run.json();
    assert_eq!(json["verifiers_ok"], true);
    let names: Vec<&str> = json["verifiers"]
        .as_array()
        .map(|v| v.iter().filter_map(|x| x["plugin"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        vec!["junit-report", "metrics-threshold", "http-health"]
    );
    assert!(
        run.artifacts()
            .join("verifiers/03_http-health.json")
            .is_file()
    );
}

#[test]
fn a_failing_verifier_fails_the_stage_with_its_findings() {
    let repo = TestRepo::new();
    let pipeline = "tests:\n  cmds: [true]\nbenchmark:\n  run_cmds: [\"echo '{\\\"score\\\": 0.5, \\\"nested\\\": {\\\"p95\\\": 300}}' > m.json\"]\n  metrics_path: m.json\nverifiers:\n  - plugin: metrics-threshold\n    config:\n      path: m.json\n      required: [score, missing]\n      checks: ['score >= 0.8', 'nested.p95 < 200']\n";
    let run = repo.verify_pipeline(pipeline);
    run.expect_code(3);
    let json = run.json();
    assert_eq!(json["failed_stage"], "verifiers");
    let findings = json["verifiers"][0]["findings"].to_string();
    for want in ["missing key `missing`", "score >= 0.8", "nested.p95 < 200"] {
        assert!(findings.contains(want), "{want}: {findings}");
    }
}

#[test]
fn junit_report_counts_failures() {
    let repo = TestRepo::new();
    repo.write(
        "junit.xml",
        "<testsuite><testcase classname='m' name='a'/><testcase classname='m' name='b'><failure message='boom'/></testcase></testsuite>",
    );
    let run = plugin_run(
        &repo,
        "junit-report",
        "{\"path\": \"junit.xml\"}",
        None,
        &[],
    );
    run.expect_code(3);
    let json = run.json();
    assert!(
        json["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("2 tests, 1 failures")),
        "{json}"
    );
    assert!(
        json["findings"].to_string().contains("m.b: failure: boom"),
        "{json}"
    );
}

#[test]
fn reading_outside_the_preopens_fails_and_inside_works() {
    let repo = TestRepo::new();
    repo.write("inside.txt", "visible");
    let inside = probe(
        &repo,
        r#"{"action": "read", "arg": "/repo/inside.txt"}"#,
        None,
        &[],
    );
    assert_eq!(inside["passed"], true, "{inside}");
    assert!(
        inside["summary"]
            .as_str()
            .is_some_and(|s| s.contains("visible"))
    );
    for path in ["/etc/hostname", "/repo/../etc/passwd", "../inside.txt"] {
        let outside = probe(
            &repo,
            &format!(r#"{{"action": "read", "arg": "{path}"}}"#),
            None,
            &[],
        );
        assert_eq!(outside["passed"], false, "{path}: {outside}");
    }
}

#[test]
fn writing_to_a_read_only_preopen_fails() {
    let repo = TestRepo::new();
    let verdict = probe(
        &repo,
        r#"{"action": "write", "arg": "/repo/new.txt"}"#,
        None,
        &[],
    );
    assert_eq!(verdict["passed"], false, "{verdict}");
    assert!(!repo.path().join("new.txt").exists());
    // Granted write, the same call works.
    let policy =
        format!("{BASE_POLICY}plugins:\n  default:\n    filesystem:\n      write: [repo]\n");
    let verdict = probe(
        &repo,
        r#"{"action": "write", "arg": "/repo/new.txt"}"#,
        Some(&policy),
        &[],
    );
    assert_eq!(verdict["passed"], true, "{verdict}");
    assert!(repo.path().join("new.txt").exists());
}

#[test]
fn only_granted_environment_variables_are_visible() {
    let repo = TestRepo::new();
    let env = [("PLUGIN_SETTING", "on"), ("OTHER_SETTING", "hidden")];
    let verdict = probe(
        &repo,
        r#"{"action": "env", "arg": "OTHER_SETTING"}"#,
        None,
        &env,
    );
    assert_eq!(verdict["passed"], false, "{verdict}");
    let policy = format!(
        "{BASE_POLICY}plugins:\n  default:\n    filesystem:\n      read: [repo]\n    env: [PLUGIN_SETTING]\n"
    );
    let granted = probe(
        &repo,
        r#"{"action": "env", "arg": "PLUGIN_SETTING"}"#,
        Some(&policy),
        &env,
    );
    assert_eq!(granted["summary"], "PLUGIN_SETTING=on", "{granted}");
    let other = probe(
        &repo,
        r#"{"action": "env", "arg": "OTHER_SETTING"}"#,
        Some(&policy),
        &env,
    );
    assert_eq!(other["passed"], false, "{other}");
}

#[test]
fn http_reaches_granted_hosts_only() {
    let granted = http_server("granted");
    let other = http_server("other");
    let repo = TestRepo::new();
    let policy =
        format!("{BASE_POLICY}plugins:\n  default:\n    network: [\"127.0.0.1:{granted}\"]\n");
    let ok = probe(
        &repo,
        &format!(r#"{{"action": "http", "arg": "http://127.0.0.1:{granted}/"}}"#),
        Some(&policy),
        &[],
    );
    assert_eq!(ok["summary"], "200 granted", "{ok}");
    let denied = probe(
        &repo,
        &format!(r#"{{"action": "http", "arg": "http://127.0.0.1:{other}/"}}"#),
        Some(&policy),
        &[],
    );
    assert_eq!(denied["passed"], false, "{denied}");
    assert!(
        denied["summary"]
            .as_str()
            .is_some_and(|s| s.contains("HttpRequestDenied")),
        "{denied}"
    );
    // With no network grant at all, even the first server is out of reach.
    let none = probe(
        &repo,
        &format!(r#"{{"action": "http", "arg": "http://127.0.0.1:{granted}/"}}"#),
        None,
        &[],
    );
    assert_eq!(none["passed"], false, "{none}");
}

#[test]
fn an_infinite_loop_ends_at_the_cpu_budget() {
    let repo = TestRepo::new();
    let policy = format!("{BASE_POLICY}plugins:\n  default:\n    limits:\n      fuel: 50000000\n");
    let verdict = probe(&repo, r#"{"action": "loop"}"#, Some(&policy), &[]);
    assert_eq!(verdict["passed"], false);
    assert!(
        verdict["error"]
            .as_str()
            .is_some_and(|e| e.contains("CPU budget")),
        "{verdict}"
    );
}

#[test]
fn a_memory_hog_ends_at_the_memory_limit() {
    let repo = TestRepo::new();
    let policy = format!("{BASE_POLICY}plugins:\n  default:\n    limits:\n      memory_mb: 64\n");
    let verdict = probe(&repo, r#"{"action": "alloc"}"#, Some(&policy), &[]);
    assert_eq!(verdict["passed"], false);
    assert!(
        verdict["error"]
            .as_str()
            .is_some_and(|e| e.contains("memory limit (64 MiB)")),
        "{verdict}"
    );
}

#[test]
fn a_panicking_plugin_is_a_failed_verdict() {
    let repo = TestRepo::new();
    let verdict = probe(&repo, r#"{"action": "panic"}"#, None, &[]);
    assert_eq!(verdict["passed"], false);
    assert!(
        verdict["error"]
            .as_str()
            .is_some_and(|e| e.contains("crashed")),
        "{verdict}"
    );
    assert!(
        verdict["stderr"]
            .as_str()
            .is_some_and(|e| e.contains("probe was asked to panic")),
        "{verdict}"
    );
}

#[test]
fn files_that_are_not_verifier_components_get_clear_errors() {
    let repo = TestRepo::new();
    let cases: &[(&str, &[u8], &str)] = &[
        ("core.wasm", b"\0asm\x01\0\0\0", "core WebAssembly module"),
        ("elf.wasm", b"\x7fELF\x02\x01\x01\0", "precompiled artifact"),
        ("text.wasm", b"hello, world", "not WebAssembly"),
    ];
    for (name, bytes, want) in cases {
        let path = repo.path().join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        let run = plugin_run(&repo, path.to_str().unwrap_or_default(), "{}", None, &[]);
        run.expect_code(2);
        assert!(run.stderr.contains(want), "{name}: {}", run.stderr);
    }
    let wrong = plugin_run(
        &repo,
        built("wrong_world").to_str().unwrap_or_default(),
        "{}",
        None,
        &[],
    );
    wrong.expect_code(2);
    assert!(
        wrong
            .stderr
            .contains("does not export the fsm-runner:verifier world"),
        "{}",
        wrong.stderr
    );
    let unknown = plugin_run(&repo, "no-such-plugin", "{}", None, &[]);
    unknown.expect_code(2);
    assert!(
        unknown.stderr.contains("built-in plugins are"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn compiled_plugins_are_cached_by_hash() {
    let repo = TestRepo::new();
    repo.write("m.json", "{\"score\": 1}");
    plugin_run(
        &repo,
        "metrics-threshold",
        "{\"path\": \"m.json\"}",
        None,
        &[],
    )
    .expect_code(0);
    let cache = repo
        .path()
        .with_extension("cache")
        .join("fsm-runner/plugins");
    let entries: Vec<String> = std::fs::read_dir(&cache)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0].ends_with(".cwasm") && entries[0].len() > 64,
        "{entries:?}"
    );
    // A second run uses the cache and still works.
    plugin_run(
        &repo,
        "metrics-threshold",
        "{\"path\": \"m.json\"}",
        None,
        &[],
    )
    .expect_code(0);
}

#[test]
fn plugin_list_and_info() {
    let repo = TestRepo::new();
    let list = repo.run(&["plugin", "list"]);
    list.expect_code(0);
    for name in ["metrics-threshold", "junit-report", "http-health"] {
        assert!(list.stdout.contains(name), "{}", list.stdout);
    }
    let info = repo.run(&["plugin", "info", "junit-report"]);
    info.expect_code(0);
    assert_eq!(info.json()["api_version"], "0.1.0");
}

#[test]
fn actions_can_run_a_plugin() {
    let repo = TestRepo::new();
    repo.write("pipeline.yml", "tests:\n  cmds: [true]\n");
    repo.write("m.json", "{\"score\": 0.2}");
    repo.write(
        ".aider_fsm/actions.yml",
        "actions:\n  - id: check-metrics\n    kind: plugin\n    plugin: metrics-threshold\n    config:\n      path: m.json\n      checks: ['score >= 0.5']\n",
    );
    let run = repo.run(&[
        "actions",
        "run",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--json",
    ]);
    run.expect_code(3);
    let json = run.json();
    assert_eq!(json["results"][0]["kind"], "plugin");
    assert_eq!(json["results"][0]["ok"], false);
    assert!(
        json["results"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("problem")),
        "{json}"
    );
}
