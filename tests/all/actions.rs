//! `fsm-runner actions run`: actions.yml steps, their errors, and their confinement.

use crate::support::*;

fn run_actions(repo: &TestRepo, text: &str) -> serde_json::Value {
    repo.write(".aider_fsm/actions.yml", text);
    let run = repo.run(&[
        "actions",
        "run",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--json",
    ]);
    assert!(
        run.code == 0 || run.code == 3,
        "code {}: {}",
        run.code,
        run.stderr
    );
    run.json()
}

fn repo_with_contract() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("PLAN.md", "# PLAN\n");
    repo.write("pipeline.yml", "tests:\n  cmds: [true]\n");
    repo.commit_all();
    repo
}

#[test]
fn write_file_and_run_cmd_succeed_and_the_file_is_deleted() {
    let repo = repo_with_contract();
    let json = run_actions(
        &repo,
        "version: 1\nactions:\n  - kind: write_file\n    path: conf/app.env\n    content: \"MODE=test\\n\"\n  - id: check\n    kind: run_cmd\n    cmd: cat conf/app.env > seen.txt\n",
    );
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["results"][0]["id"], "action-001");
    assert_eq!(json["results"][1]["id"], "check");
    assert_eq!(repo.read("seen.txt"), "MODE=test\n");
    assert!(!repo.path().join(".aider_fsm/actions.yml").exists());
    let dir = std::path::PathBuf::from(json["artifacts_dir"].as_str().unwrap_or_default());
    assert!(dir.join("check_cmd01_try01_result.json").is_file());
    assert!(dir.join("actions_results.json").is_file());
}

#[test]
fn action_errors_are_results_with_exit_code_2() {
    let cases: &[(&str, &str)] = &[
        ("  - kind: teleport\n", "unsupported_action_kind: teleport"),
        ("  - kind: run_cmd\n", "missing_cmd"),
        ("  - kind: write_file\n    content: x\n", "missing_path"),
        (
            "  - kind: write_file\n    path: ../outside.txt\n    content: x\n",
            "path_outside_repo",
        ),
        (
            "  - kind: write_file\n    path: /etc/evil\n    content: x\n",
            "path_outside_repo",
        ),
        (
            "  - kind: write_file\n    path: PLAN.md\n    content: x\n",
            "path_is_protected",
        ),
        (
            "  - kind: write_file\n    path: pipeline.yml\n    content: x\n",
            "path_is_protected",
        ),
        (
            "  - kind: write_file\n    path: .git/hooks/pre-commit\n    content: x\n",
            "path_is_protected",
        ),
    ];
    for (action, error) in cases {
        let repo = repo_with_contract();
        let json = run_actions(&repo, &format!("version: 1\nactions:\n{action}"));
        let result = &json["results"][0];
        assert_eq!(result["rc"], 2, "{action}");
        assert_eq!(result["error"], *error, "{action}");
        assert_eq!(repo.read("PLAN.md"), "# PLAN\n");
    }
}

#[test]
fn a_parse_error_is_one_failed_result() {
    let repo = repo_with_contract();
    let json = run_actions(&repo, "version: 1\nactions: [\n");
    assert_eq!(json["ok"], false);
    assert_eq!(json["results"][0]["rc"], 2);
    assert!(
        json["results"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("actions.yml:"))
    );
}

#[test]
fn the_first_failing_action_stops_the_list() {
    let repo = repo_with_contract();
    let json = run_actions(
        &repo,
        "actions:\n  - kind: run_cmd\n    cmd: exit 4\n  - kind: run_cmd\n    cmd: touch should-not-exist\n",
    );
    assert_eq!(json["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["results"][0]["rc"], 4);
    assert!(!repo.path().join("should-not-exist").exists());
}

#[test]
fn action_commands_go_through_the_command_policy() {
    let repo = repo_with_contract();
    let json = run_actions(
        &repo,
        "actions:\n  - kind: install_tool\n    cmd: sudo apt-get install x\n",
    );
    assert_eq!(json["results"][0]["rc"], 126);
    assert!(
        json["results"][0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("blocked_by_denylist"))
    );
}

#[test]
fn write_file_through_a_symlink_to_a_protected_file_is_refused() {
    let repo = repo_with_contract();
    let _ = std::os::unix::fs::symlink(".", repo.path().join("docs"));
    let _ = std::os::unix::fs::symlink("PLAN.md", repo.path().join("notes.md"));
    let json = run_actions(
        &repo,
        "actions:\n  - kind: write_file\n    path: docs/PLAN.md\n    content: pwned\n",
    );
    assert_eq!(json["results"][0]["error"], "path_is_protected");
    // Writing to a symlink replaces the link itself, never the file it points at.
    let json = run_actions(
        &repo,
        "actions:\n  - kind: write_file\n    path: notes.md\n    content: notes\n",
    );
    assert_eq!(json["results"][0]["ok"], true);
    assert_eq!(repo.read("PLAN.md"), "# PLAN\n");
    assert_eq!(repo.read("notes.md"), "notes");
}

#[test]
fn action_commands_are_confined_under_the_actions_stage() {
    let repo = repo_with_contract();
    let outside = std::env::temp_dir().join(format!("fsm-action-escape-{}", std::process::id()));
    let json = run_actions(
        &repo,
        &format!(
            "actions:\n  - id: setup\n    kind: run_cmd\n    cmd: \"echo ok > inside.txt; echo pwned > {} || true; echo pwned >> PLAN.md || true\"\n",
            outside.display()
        ),
    );
    assert_eq!(json["results"][0]["ok"], true, "{json}");
    assert_eq!(repo.read("inside.txt"), "ok\n");
    assert!(!outside.exists(), "the action wrote outside the repo");
    assert_eq!(repo.read("PLAN.md"), "# PLAN\n");
    let dir = std::path::PathBuf::from(json["artifacts_dir"].as_str().unwrap_or_default());
    let grants: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("setup_grants.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(grants["grants"]["stage"], "actions");
    assert!(grants["confinement"].is_object());
}
