use std::path::Path;

use super::*;

fn ok(text: &str) -> Pipeline {
    match parse(Path::new("pipeline.yml"), text) {
        Ok(p) => p,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn err(text: &str) -> String {
    match parse(Path::new("pipeline.yml"), text) {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_file_is_an_empty_pipeline() {
    let p = ok("");
    assert_eq!(p.tests, None);
    assert_eq!(p.effective_test_cmds(None), vec!["pytest -q".to_string()]);
}

#[test]
fn version_other_than_one_is_refused() {
    assert_eq!(
        err("version: 2\n"),
        "pipeline.yml:1:10: version must be 1, got `2` (only pipeline version 1 is supported)"
    );
    ok("version: 1\n");
}

#[test]
fn top_level_must_be_a_mapping() {
    assert_eq!(
        err("- a\n- b\n"),
        "pipeline.yml:1:1: top level must be a mapping"
    );
}

#[test]
fn empty_string_in_cmds_names_line_column_and_field() {
    let text = "version: 1\ntests:\n  cmds:\n    - pytest -q\n    - ''\n";
    assert_eq!(
        err(text),
        "pipeline.yml:5:7: tests.cmds[1] must be a non-empty string"
    );
    let text = "tests:\n  cmds: [a, \"\"]\n";
    assert_eq!(
        err(text),
        "pipeline.yml:2:13: tests.cmds[1] must be a non-empty string"
    );
}

#[test]
fn cmds_list_wins_over_cmd_and_cmd_is_accepted_alone() {
    let p = ok("tests:\n  cmd: one\n  cmds: [two, three]\n");
    assert_eq!(
        p.tests.map(|t| t.cmds),
        Some(vec!["two".into(), "three".into()])
    );
    let p = ok("tests:\n  cmd: one\n");
    assert_eq!(p.effective_test_cmds(None), vec!["one".to_string()]);
    assert_eq!(
        p.effective_test_cmds(Some("make test")),
        vec!["make test".to_string()]
    );
}

#[test]
fn auth_steps_is_an_alias_of_cmds() {
    let p = ok("auth:\n  steps: [login-a, login-b]\n  interactive: yes\n");
    let auth = p.auth.unwrap_or_default();
    assert_eq!(
        auth.stage.cmds,
        vec!["login-a".to_string(), "login-b".to_string()]
    );
    assert!(auth.interactive);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn teardown_policy_values() {
    for (text, want) in [
        ("always", TeardownPolicy::Always),
        ("on_success", TeardownPolicy::OnSuccess),
        ("on_failure", TeardownPolicy::OnFailure),
        ("never", TeardownPolicy::Never),
    ] {
        let p = ok(&format!("deploy:\n  teardown_policy: {text}\n"));
        assert_eq!(p.deploy.map(|d| d.teardown_policy), Some(want));
    }
    assert_eq!(
        err("deploy:\n  teardown_policy: sometimes\n"),
        "pipeline.yml:2:20: deploy.teardown_policy must be one of always, on_success, on_failure, never; got `sometimes`"
    );
}

#[test]
fn unknown_keys_are_accepted_with_a_warning() {
    let p = ok("colour: blue\ntests:\n  cmds: [x]\n  flavour: 1\ntooling:\n  a: 1\n");
    assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("unknown key `colour` ignored"))
    );
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("unknown key `tests.flavour` ignored"))
    );
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("`tooling` is deprecated"))
    );
}

#[test]
fn sections_must_be_mappings() {
    assert_eq!(
        err("tests: [a]\n"),
        "pipeline.yml:1:8: tests must be a mapping"
    );
    assert_eq!(
        err("deploy: 3\n"),
        "pipeline.yml:1:9: deploy must be a mapping"
    );
}

#[test]
fn env_values_become_strings() {
    let p = ok("tests:\n  env:\n    A: 1\n    B: ~\n    C: true\n    D: 'x'\n");
    let env = p.tests.map(|t| t.env).unwrap_or_default();
    let want: Vec<(String, String)> = [("A", "1"), ("B", ""), ("C", "True"), ("D", "x")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(env, want);
}

#[test]
fn every_section_and_key() {
    let text = r#"
version: 1
security:
  mode: system
  allowlist: ["^python"]
  denylist: ["curl"]
  max_cmd_seconds: 30
  max_total_seconds: 90.5
auth:
  cmd: login
  timeout_seconds: 5
tests:
  cmds: [a]
  timeout_seconds: 10
  retries: 2
  workdir: sub
deploy:
  setup_cmds: [s1]
  health_cmd: h1
  teardown_cmds: [t1]
  teardown_policy: on_failure
  retries: 1
  kubectl_dump:
    enabled: true
    namespace: ns
    label_selector: app=x
    include_logs: true
benchmark:
  run_cmd: bench
  metrics_path: out/metrics.json
  required_keys: [score, n]
artifacts:
  out_dir: arts
"#;
    let p = ok(text);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.security.mode, SecurityMode::System);
    assert_eq!(p.security.max_cmd_seconds, Some(30.0));
    assert_eq!(p.security.max_total_seconds, Some(90.5));
    assert_eq!(p.auth.map(|a| a.stage.cmds), Some(vec!["login".into()]));
    let tests = p.tests.unwrap_or_default();
    assert_eq!((tests.retries, tests.workdir.as_deref()), (2, Some("sub")));
    let deploy = p.deploy.unwrap_or_default();
    assert_eq!(deploy.setup_cmds, vec!["s1".to_string()]);
    assert_eq!(deploy.health_cmds, vec!["h1".to_string()]);
    assert_eq!(deploy.teardown_policy, TeardownPolicy::OnFailure);
    assert_eq!(deploy.common.retries, 1);
    assert!(deploy.kubectl_dump.enabled && deploy.kubectl_dump.include_logs);
    let bench = p.benchmark.unwrap_or_default();
    assert_eq!(bench.stage.cmds, vec!["bench".to_string()]);
    assert_eq!(
        bench.required_keys,
        vec!["score".to_string(), "n".to_string()]
    );
    assert_eq!(p.artifacts_out_dir.as_deref(), Some("arts"));
}

#[test]
fn bad_values_name_their_field() {
    assert_eq!(
        err("tests:\n  retries: -1\n"),
        "pipeline.yml:2:12: tests.retries must be a whole number >= 0, got `-1`"
    );
    assert_eq!(
        err("security:\n  mode: yolo\n"),
        "pipeline.yml:2:9: security.mode must be `safe` or `system`, got `yolo`"
    );
    assert_eq!(
        err("tests:\n  timeout_seconds: soon\n"),
        "pipeline.yml:2:20: tests.timeout_seconds must be a number, got `soon`"
    );
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let e = err("tests:\n  cmds: [a\n");
    assert!(e.starts_with("pipeline.yml:"), "{e}");
}

#[test]
fn every_example_pipeline_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = 0;
    for entry in walk(&dir) {
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("pipeline") && (name.ends_with(".yml") || name.ends_with(".yaml")) {
            let p = load(&entry);
            assert!(p.is_ok(), "{}: {:?}", entry.display(), p.err());
            seen += 1;
        }
    }
    assert!(seen >= 3, "expected the example pipelines, found {seen}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
