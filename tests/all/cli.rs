//! `policy check | explain`, `sandbox exec`, `doctor`.

use crate::support::*;

#[test]
fn policy_check_accepts_the_examples_and_pins_errors() {
    let repo = TestRepo::new();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for name in [
        "policy-offline-tests.yml",
        "policy-package-index.yml",
        "policy-deploy.yml",
    ] {
        let path = examples.join(name).display().to_string();
        repo.run(&["policy", "check", &path]).expect_code(0);
    }
    repo.write("bad.yml", "defaults:\n  network: sometimes\n");
    let run = repo.run(&["policy", "check", "bad.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("bad.yml:2:12: defaults.network must be"),
        "{}",
        run.stderr
    );
}

#[test]
fn policy_explain_lists_every_stage() {
    let repo = TestRepo::new();
    repo.write("p.yml", "stages:\n  deploy_setup:\n    network: all\n");
    let run = repo.run(&["policy", "explain", "--policy", "p.yml", "--json"]);
    run.expect_code(0);
    let json = run.json();
    let stages = json["stages"].as_array().cloned().unwrap_or_default();
    assert_eq!(stages.len(), 7);
    let setup = stages
        .iter()
        .find(|s| s["stage"] == "deploy_setup")
        .cloned()
        .unwrap_or_default();
    assert_eq!(setup["network"], "all");
    let tests = stages
        .iter()
        .find(|s| s["stage"] == "tests")
        .cloned()
        .unwrap_or_default();
    assert_eq!(tests["network"], "none");
    let human = repo.run(&["policy", "explain"]);
    human.expect_code(0);
    assert!(human.stdout.contains("[benchmark]"), "{}", human.stdout);
}

#[test]
fn sandbox_exec_runs_one_confined_command_and_passes_its_exit_code() {
    let repo = TestRepo::new();
    let run = repo.run(&[
        "sandbox",
        "exec",
        "--",
        "sh",
        "-c",
        "echo made > here.txt; cat /etc/shadow; exit 7",
    ]);
    run.expect_code(7);
    assert_eq!(repo.read("here.txt"), "made\n");
    assert!(!run.stdout.contains("root:"), "{}", run.stdout);
    let escape = std::env::temp_dir().join(format!("fsm-exec-escape-{}", std::process::id()));
    let cmd = format!("echo x > {}", escape.display());
    let run = repo.run(&["sandbox", "exec", "--", "sh", "-c", &cmd]);
    assert_ne!(run.code, 0);
    assert!(!escape.exists());
    let bad = repo.run(&["sandbox", "exec", "--stage", "nope", "--", "true"]);
    bad.expect_code(2);
}

#[test]
fn doctor_reports_every_feature() {
    let repo = TestRepo::new();
    let run = repo.run(&["doctor", "--json"]);
    run.expect_code(0);
    let json = run.json();
    let names: Vec<String> = json["checks"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|x| x["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for want in [
        "landlock",
        "user namespaces",
        "mount namespaces",
        "network namespaces",
        "seccomp",
        "process limits",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(json["sandbox_enforce_supported"].is_boolean());
}
