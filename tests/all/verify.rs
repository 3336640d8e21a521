//! `fsm-runner verify`: stages, retries, timeouts, output caps, metrics, refusals, teardown.

use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::support::*;

#[test]
fn example_repo_passes_with_its_pipeline() {
    let repo = TestRepo::example("demo-repo");
    let run = repo.run(&["verify", "--repo", ".", "--pipeline", "pipeline.yml"]);
    run.expect_code(0);
    assert!(run.stdout.contains("verify: PASSED"), "{}", run.stdout);
    assert!(run.stdout.contains("artifacts: "), "{}", run.stdout);
}

#[test]
fn example_pipeline_with_deploy_passes_and_stops_its_service() {
    let repo = TestRepo::example("demo-repo");
    let pipeline =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipeline.example.yml");
    let mark = marker("svc");
    // Same pipeline, but the service carries a marker so the test can look for it afterwards.
    let text = std::fs::read_to_string(&pipeline)
        .unwrap_or_default()
        .replace(
            "python3 serve.py 8765 &",
            &format!("python3 serve.py 8765 {mark} &"),
        );
    let run = repo.verify_pipeline(&text);
    run.expect_code(0);
    let json = run.json();
    assert_eq!(json["deploy_setup_rc"], 0);
    assert_eq!(json["deploy_health_rc"], 0);
    assert_eq!(json["deploy_teardown_rc"], 0);
    assert_no_processes(&mark);
}

#[test]
fn broken_test_fails_at_tests_with_exit_3_and_artifacts() {
    let repo = TestRepo::example("demo-repo");
    let calc = repo
        .read("calc.py")
        .replace("return sum(values) / len(values)", "return sum(values)");
    repo.write("calc.py", &calc);
    let run = repo.run(&[
        "verify",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--json",
    ]);
    run.expect_code(3);
    let json = run.json();
    assert_eq!(json["failed_stage"], "tests");
    assert_eq!(json["ok"], false);
    let dir = run.artifacts();
    assert!(dir.ends_with("preflight"), "{}", dir.display());
    let summary = artifact_json(&dir, "summary.json");
    assert_eq!(summary["failed_stage"], "tests");
    assert_ne!(summary["tests_rc"], 0);
    assert!(artifact(&dir, "tests_stderr.txt").contains("FAILED"));
    assert!(dir.join("tests_cmd01_try01_result.json").is_file());
    assert_eq!(artifact_json(&dir, "tests_summary.json")["ok"], false);
}

#[test]
fn each_stage_failing_in_turn_is_named() {
    let stages = [
        "auth",
        "tests",
        "deploy_setup",
        "deploy_health",
        "benchmark",
    ];
    for failing in stages {
        let cmd = |stage: &str| if stage == failing { "exit 7" } else { "true" };
        let pipeline = format!(
            "auth:\n  cmds: ['{}']\ntests:\n  cmds: ['{}']\ndeploy:\n  setup_cmds: ['{}']\n  health_cmds: ['{}']\nbenchmark:\n  run_cmds: ['{}']\n",
            cmd("auth"),
            cmd("tests"),
            cmd("deploy_setup"),
            cmd("deploy_health"),
            cmd("benchmark")
        );
        let repo = TestRepo::new();
        let run = repo.verify_pipeline(&pipeline);
        run.expect_code(3);
        let json = run.json();
        assert_eq!(json["failed_stage"], failing);
        assert_eq!(json[format!("{failing}_rc")], 7);
        // Nothing after the failing stage ran.
        let position = stages.iter().position(|s| *s == failing).unwrap_or(0);
        for later in &stages[position + 1..] {
            assert!(
                json[format!("{later}_rc")].is_null(),
                "{later} ran after {failing}"
            );
        }
    }
}

#[test]
fn metrics_failures() {
    let cases: &[(&str, &str)] = &[
        ("true", "metrics_file_missing: m.json"),
        ("echo '{nope' > m.json", "invalid_json: "),
        ("echo '[1, 2]' > m.json", "metrics_json_not_object"),
        ("echo '{\"score\": 1}' > m.json", "missing_keys: n, model"),
        (
            "ln -s /etc/passwd m.json",
            "metrics_file_outside_repo: m.json",
        ),
        ("mkfifo m.json", "metrics_file_not_regular: m.json"),
    ];
    for (bench, want) in cases {
        let repo = TestRepo::new();
        let pipeline = format!(
            "tests:\n  cmds: [true]\nbenchmark:\n  run_cmds: [\"{}\"]\n  metrics_path: m.json\n  required_keys: [score, n, model]\n",
            bench.replace('"', "\\\"")
        );
        let run = repo.verify_pipeline(&pipeline);
        run.expect_code(3);
        let json = run.json();
        assert_eq!(json["failed_stage"], "metrics", "{bench}");
        let errors = json["metrics_errors"].to_string();
        assert!(errors.contains(want), "{bench}: {errors}");
    }
}

#[test]
fn invalid_metrics_are_still_copied_into_artifacts() {
    let repo = TestRepo::new();
    let run = repo.verify_pipeline(
        "tests:\n  cmds: [true]\nbenchmark:\n  run_cmds: [\"echo '{broken' > m.json\"]\n  metrics_path: m.json\n",
    );
    run.expect_code(3);
    assert_eq!(artifact(&run.artifacts(), "metrics.json").trim(), "{broken");
}

#[test]
fn valid_metrics_pass_and_are_copied() {
    let repo = TestRepo::new();
    let run = repo.verify_pipeline(
        "tests:\n  cmds: [true]\nbenchmark:\n  run_cmds: [\"echo '{\\\"score\\\": 0.9}' > m.json\"]\n  metrics_path: m.json\n  required_keys: [score]\n",
    );
    run.expect_code(0);
    assert_eq!(run.json()["metrics_ok"], true);
    assert!(artifact(&run.artifacts(), "metrics.json").contains("0.9"));
}

#[test]
fn retries_stop_at_the_first_success() {
    let repo = TestRepo::new();
    // Fails on the first two attempts, succeeds on the third.
    let cmd = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]";
    let run = repo.verify_pipeline(&format!("tests:\n  cmds: ['{cmd}']\n  retries: 3\n"));
    run.expect_code(0);
    let dir = run.artifacts();
    assert_eq!(
        artifact_json(&dir, "tests_summary.json")["total_results"],
        3
    );
    assert_eq!(
        artifact_json(&dir, "tests_cmd01_try02_result.json")["rc"],
        1
    );
    assert_eq!(
        artifact_json(&dir, "tests_cmd01_try03_result.json")["rc"],
        0
    );
    assert!(!dir.join("tests_cmd01_try04_result.json").exists());
    assert_eq!(repo.read("count").trim(), "3");
}

#[test]
fn retries_exhausted_fail_the_stage() {
    let repo = TestRepo::new();
    let run = repo.verify_pipeline("tests:\n  cmds: ['echo try >> tries; exit 1']\n  retries: 2\n");
    run.expect_code(3);
    assert_eq!(repo.read("tries").lines().count(), 3);
}

#[test]
fn timeout_kills_a_term_ignoring_command_and_its_daemon() {
    let repo = TestRepo::new();
    let mark = marker("timeout");
    let daemon = format!(
        "setsid python3 -c 'import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1000)' {mark} &"
    );
    let cmd = format!("trap '' TERM; {daemon} python3 -c 'import time; time.sleep(1000)' {mark}");
    let run = repo.verify_pipeline(&format!(
        "tests:\n  cmds: [\"{}\"]\n  timeout_seconds: 1\n",
        cmd.replace('"', "\\\"")
    ));
    run.expect_code(3);
    let dir = run.artifacts();
    let result = artifact_json(&dir, "tests_result.json");
    assert_eq!(result["rc"], 124);
    assert_eq!(result["timed_out"], true);
    assert_no_processes(&mark);
}

#[test]
fn max_cmd_seconds_caps_the_stage_timeout() {
    let repo = TestRepo::new();
    let run = repo.verify_pipeline(
        "security:\n  max_cmd_seconds: 1\ntests:\n  cmds: ['sleep 30']\n  timeout_seconds: 600\n",
    );
    run.expect_code(3);
    assert_eq!(run.json()["tests_rc"], 124);
}

#[test]
fn max_total_seconds_stops_further_attempts() {
    let repo = TestRepo::new();
    let run = repo.verify_pipeline(
        "security:\n  max_total_seconds: 1\ntests:\n  cmds: ['sleep 1.2; exit 1']\n  retries: 5\n",
    );
    run.expect_code(3);
    let dir = run.artifacts();
    let second = artifact_json(&dir, "tests_cmd01_try02_result.json");
    assert_eq!(second["rc"], 124);
    assert_eq!(second["max_total_seconds_exceeded"], 1.0);
    assert!(
        artifact(&dir, "tests_cmd01_try02_stderr.txt").contains("max_total_seconds_exceeded: 1")
    );
    assert!(!dir.join("tests_cmd01_try03_result.json").exists());
}

#[test]
fn huge_output_is_capped_and_memory_stays_bounded() {
    let repo = TestRepo::new();
    repo.write(
        "pipeline.yml",
        "tests:\n  cmds: ['head -c 3000000000 /dev/zero; echo done >&2']\n",
    );
    let mut cmd = Command::new(BIN);
    cmd.args([
        "verify",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--json",
    ])
    .current_dir(repo.path())
    .stdout(std::process::Stdio::piped());
    // SAFETY: setpgid between fork and exec only.
    unsafe {
        cmd.pre_exec(|| {
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, which also reports its rusage
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
    let pid = child.id() as i32;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid out-pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status}"
    );
    // ru_maxrss is in KiB: the runner (and the helper) stay far below the 3 GB printed.
    assert!(
        usage.ru_maxrss < 200 * 1024,
        "max RSS {} KiB",
        usage.ru_maxrss
    );
    let dir = std::fs::read_dir(repo.path().join(".aider_fsm/artifacts"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("preflight"))
        .unwrap_or_default();
    let result = artifact_json(&dir, "tests_result.json");
    assert_eq!(result["stdout_dropped_bytes"], 3_000_000_000u64 - 2_000_000);
    let size = std::fs::metadata(dir.join("tests_stdout.txt"))
        .map(|m| m.len())
        .unwrap_or(u64::MAX);
    assert!(size < 2_100_000, "stdout artifact is {size} bytes");
    assert!(artifact(&dir, "tests_stderr.txt").contains("done"));
}

#[test]
fn grandchild_holding_the_pipe_does_not_hang_the_runner() {
    let repo = TestRepo::new();
    let mark = marker("pipe");
    let cmd =
        format!("(setsid python3 -c 'import time; time.sleep(1000)' {mark} &) ; echo started");
    let run = repo.verify_pipeline(&format!("tests:\n  cmds: [\"{cmd}\"]\n"));
    run.expect_code(0);
    assert!(artifact(&run.artifacts(), "tests_stdout.txt").contains("started"));
    assert_no_processes(&mark);
}

#[test]
fn every_policy_refusal_has_exit_126_and_its_reason() {
    let cases: &[(&str, &str, &str)] = &[
        ("", "rm -rf /", "blocked_by_hard_deny: "),
        ("", "rm -rf ~", "blocked_by_hard_deny: "),
        ("", "rm -rf $HOME", "blocked_by_hard_deny: "),
        ("", ":(){ :|:& };:", "blocked_by_hard_deny: "),
        ("", "sudo true", "blocked_by_denylist: "),
        ("", "dd if=/dev/zero of=x count=1", "blocked_by_denylist: "),
        (
            "security:\n  denylist: ['curl']\n",
            "curl http://x",
            "blocked_by_denylist: curl",
        ),
        (
            "security:\n  allowlist: ['^python3 ']\n",
            "ls",
            "blocked_by_allowlist",
        ),
        (
            "",
            "docker login registry.example",
            "likely_interactive_command_disallowed_in_strict_mode",
        ),
        (
            "",
            "gh auth login",
            "likely_interactive_command_disallowed_in_strict_mode",
        ),
    ];
    for (security, cmd, reason) in cases {
        let repo = TestRepo::new();
        let pipeline = format!(
            "{security}tests:\n  cmds: [\"{}\"]\n",
            cmd.replace('"', "\\\"")
        );
        let run = repo.verify_pipeline(&pipeline);
        run.expect_code(3);
        let dir = run.artifacts();
        let result = artifact_json(&dir, "tests_result.json");
        assert_eq!(result["rc"], 126, "{cmd}");
        assert!(
            artifact(&dir, "tests_stderr.txt").starts_with(reason),
            "{cmd}: {}",
            artifact(&dir, "tests_stderr.txt")
        );
    }
}

#[test]
fn safe_deny_without_a_pipeline_uses_its_own_reason() {
    let repo = TestRepo::new();
    let run = repo.run(&["verify", "--repo", ".", "--test-cmd", "sudo ls", "--json"]);
    run.expect_code(3);
    let stderr = artifact(&run.artifacts(), "tests_stderr.txt");
    assert!(
        stderr.starts_with("blocked_by_default_safe_deny"),
        "{stderr}"
    );
}

#[test]
fn system_mode_allows_what_safe_mode_refuses() {
    let repo = TestRepo::new();
    // `dd` is a word the safe list refuses; in system mode it runs.
    let run = repo.verify_pipeline(
        "security:\n  mode: system\ntests:\n  cmds: ['dd if=/dev/null of=/dev/null']\n",
    );
    run.expect_code(0);
}

#[test]
fn guided_mode_allows_interactive_looking_commands() {
    let repo = TestRepo::new();
    repo.write("pipeline.yml", "tests:\n  cmds: ['echo gh auth login']\n");
    let run = repo.run(&[
        "verify",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--unattended",
        "guided",
        "--json",
    ]);
    run.expect_code(0);
}

#[test]
fn workdir_outside_the_repo_fails_the_stage_with_rc_2() {
    for workdir in ["..", "/tmp", "escape"] {
        let repo = TestRepo::new();
        let _ = std::os::unix::fs::symlink("/tmp", repo.path().join("escape"));
        let run = repo.verify_pipeline(&format!("tests:\n  cmds: [true]\n  workdir: {workdir}\n"));
        run.expect_code(3);
        let json = run.json();
        assert_eq!(json["tests_rc"], 2, "{workdir}");
        let stderr = artifact(&run.artifacts(), "tests_stderr.txt");
        assert!(
            stderr.starts_with("workdir_outside_repo"),
            "{workdir}: {stderr}"
        );
    }
}

#[test]
fn workdir_inside_the_repo_is_used() {
    let repo = TestRepo::new();
    repo.write("sub/marker.txt", "here");
    let run = repo.verify_pipeline("tests:\n  cmds: ['cat marker.txt']\n  workdir: sub\n");
    run.expect_code(0);
    assert_eq!(artifact(&run.artifacts(), "tests_stdout.txt"), "here");
}

#[test]
fn teardown_policies() {
    // (policy, verification passes, teardown expected to run)
    let cases = [
        ("always", true, true),
        ("always", false, true),
        ("on_success", true, true),
        ("on_success", false, false),
        ("on_failure", true, false),
        ("on_failure", false, true),
        ("never", true, false),
        ("never", false, false),
    ];
    for (policy, pass, runs) in cases {
        let repo = TestRepo::new();
        let health = if pass { "true" } else { "false" };
        let pipeline = format!(
            "deploy:\n  setup_cmds: [true]\n  health_cmds: ['{health}']\n  teardown_cmds: ['touch torn-down']\n  teardown_policy: {policy}\ntests:\n  cmds: [true]\n"
        );
        let run = repo.verify_pipeline(&pipeline);
        run.expect_code(if pass { 0 } else { 3 });
        assert_eq!(
            repo.path().join("torn-down").exists(),
            runs,
            "{policy} pass={pass}"
        );
        assert_eq!(
            run.json()["deploy_teardown_rc"].is_null(),
            !runs,
            "{policy} pass={pass}"
        );
    }
}

#[test]
fn teardown_runs_after_an_earlier_stage_fails() {
    let repo = TestRepo::new();
    let run = repo.verify_pipeline(
        "tests:\n  cmds: [false]\ndeploy:\n  setup_cmds: [true]\n  teardown_cmds: ['touch torn-down']\n",
    );
    run.expect_code(3);
    assert!(repo.path().join("torn-down").exists());
}

#[test]
fn json_output_shape() {
    let repo = TestRepo::new();
    let run = repo.verify_pipeline("tests:\n  cmds: ['echo hi']\n");
    run.expect_code(0);
    let json = run.json();
    for key in [
        "run_id",
        "exit_code",
        "ok",
        "failed_stage",
        "auth_rc",
        "tests_rc",
        "deploy_setup_rc",
        "deploy_health_rc",
        "benchmark_rc",
        "metrics_path",
        "metrics_errors",
        "artifacts_dir",
        "stages",
        "test_cmd",
        "warnings",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(json["exit_code"], 0);
    assert_eq!(json["test_cmd"], "echo hi");
    let stage = &json["stages"][0];
    assert_eq!(stage["stage"], "tests");
    assert_eq!(stage["rc"], 0);
    assert!(stage["duration_ms"].is_u64());
    assert!(
        stage["stdout_path"]
            .as_str()
            .is_some_and(|p| p.ends_with("tests_stdout.txt"))
    );
    // Exactly one JSON object on stdout.
    assert_eq!(run.stdout.trim().lines().count(), 1);
}

#[test]
fn without_a_pipeline_the_test_cmd_is_the_tests_stage() {
    let repo = TestRepo::new();
    let run = repo.run(&[
        "verify",
        "--repo",
        ".",
        "--test-cmd",
        "echo ran > out.txt",
        "--json",
    ]);
    run.expect_code(0);
    assert_eq!(repo.read("out.txt").trim(), "ran");
    assert_eq!(run.json()["test_cmd"], "echo ran > out.txt");
}

#[test]
fn test_cmd_flag_wins_over_tests_cmds() {
    let repo = TestRepo::new();
    repo.write("pipeline.yml", "tests:\n  cmds: [false]\n");
    let run = repo.run(&[
        "verify",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--test-cmd",
        "true",
        "--json",
    ]);
    run.expect_code(0);
}

#[test]
fn malformed_pipeline_is_exit_2_with_position_and_field() {
    let repo = TestRepo::new();
    repo.write(
        "pipeline.yml",
        "version: 1\ntests:\n  cmds:\n    - ok\n    - ''\n",
    );
    let run = repo.run(&["verify", "--repo", ".", "--pipeline", "pipeline.yml"]);
    run.expect_code(2);
    assert!(
        run.stderr
            .contains("pipeline.yml:5:7: tests.cmds[1] must be a non-empty string"),
        "{}",
        run.stderr
    );
    repo.write("pipeline.yml", "version: 2\n");
    repo.run(&["verify", "--repo", ".", "--pipeline", "pipeline.yml"])
        .expect_code(2);
}

#[test]
fn unknown_keys_warn_but_run() {
    let repo = TestRepo::new();
    repo.write("pipeline.yml", "tests:\n  cmds: [true]\n  colour: blue\n");
    let run = repo.run(&["verify", "--repo", ".", "--pipeline", "pipeline.yml"]);
    run.expect_code(0);
    assert!(
        run.stderr.contains("unknown key `tests.colour` ignored"),
        "{}",
        run.stderr
    );
}

#[test]
fn stage_env_and_strict_defaults_reach_commands() {
    let repo = TestRepo::new();
    let run = repo.verify_pipeline(
        "tests:\n  cmds: ['echo \"$CI $GIT_TERMINAL_PROMPT $STAGE_VAR $EMPTY_VAR.\"']\n  env:\n    STAGE_VAR: 42\n    EMPTY_VAR:\n",
    );
    run.expect_code(0);
    assert_eq!(
        artifact(&run.artifacts(), "tests_stdout.txt").trim(),
        "1 0 42 ."
    );
}

#[test]
fn env_file_is_loaded_and_existing_variables_win() {
    let repo = TestRepo::new();
    repo.write(
        ".env",
        "# settings\nexport FROM_FILE='file value'\nPRESET=from-file\n",
    );
    repo.write(
        "pipeline.yml",
        "tests:\n  cmds: ['echo \"$FROM_FILE|$PRESET\"']\n",
    );
    // Commands see only the names their policy grants: grant both.
    repo.write(
        "policy.yml",
        "defaults:\n  filesystem:\n    read: [system, toolchains]\n    write: [repo, tmp]\n  env: [PATH, FROM_FILE, PRESET]\n",
    );
    let args = [
        "verify",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--policy",
        "policy.yml",
        "--json",
    ];
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .args(extra)
            .current_dir(repo.path())
            .env("PRESET", "from-env");
        Run::from(cmd.output().unwrap_or_else(|e| panic!("{e}")))
    };
    let plain = run(&[]);
    plain.expect_code(0);
    assert_eq!(
        artifact(&plain.artifacts(), "tests_stdout.txt").trim(),
        "file value|from-env"
    );
    let overridden = run(&["--env-override"]);
    assert_eq!(
        artifact(&overridden.artifacts(), "tests_stdout.txt").trim(),
        "file value|from-file"
    );
    let disabled = run(&["--env-file", ""]);
    assert_eq!(
        artifact(&disabled.artifacts(), "tests_stdout.txt").trim(),
        "|from-env"
    );
}

#[test]
fn kubectl_dump_runs_when_enabled_and_kubectl_is_present() {
    let repo = TestRepo::new();
    let bin = repo.path().join("fakebin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    // A stand-in kubectl that records how it was called.
    let script = "#!/bin/sh\necho \"kubectl $*\"\n";
    std::fs::write(bin.join("kubectl"), script).unwrap_or_else(|e| panic!("{e}"));
    let _ = Command::new("chmod")
        .arg("+x")
        .arg(bin.join("kubectl"))
        .status();
    repo.write(
        "pipeline.yml",
        "tests:\n  cmds: [true]\ndeploy:\n  setup_cmds: [true]\n  kubectl_dump:\n    enabled: true\n    label_selector: app=x\n    include_logs: true\n",
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(BIN)
        .args([
            "verify",
            "--repo",
            ".",
            "--pipeline",
            "pipeline.yml",
            "--json",
        ])
        .current_dir(repo.path())
        .env("PATH", path)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let run = Run::from(out);
    run.expect_code(0);
    let dir = run.artifacts().join("kubectl");
    assert_eq!(
        artifact(&dir, "pods.txt").trim(),
        "kubectl get pods -A -o wide"
    );
    assert_eq!(artifact(&dir, "events.txt").trim(), "kubectl get events -A");
    assert!(artifact(&dir, "logs.txt").contains("logs -l app=x"));
}

#[test]
fn artifacts_dir_flag_and_out_dir_are_honoured() {
    let repo = TestRepo::new();
    let run = repo.verify_pipeline("tests:\n  cmds: [true]\nartifacts:\n  out_dir: my-artifacts\n");
    run.expect_code(0);
    assert!(
        run.artifacts().starts_with(
            repo.path()
                .canonicalize()
                .unwrap_or_default()
                .join("my-artifacts")
        )
    );
    let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = elsewhere.path().display().to_string();
    let run = repo.run(&[
        "verify",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--artifacts-dir",
        &dir,
        "--json",
    ]);
    run.expect_code(0);
    assert!(run.artifacts().starts_with(elsewhere.path()));
}
