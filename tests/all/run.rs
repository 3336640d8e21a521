//! `fsm-runner run` and `demo`: the whole loop against a scripted OpenAI-compatible server on
//! loopback, on real git repos with real (confined) test commands.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fsm_runner::llm::scripted::{RecordedRequest, Script, ScriptedReply, ScriptedServer};

use crate::support::*;

const STEP: &str = "- [ ] (STEP_ID=001) Fix add() so it returns the sum";
const PLAN: &str = "# PLAN\n\n## Goal\nadd() must add\n\n## Next (exactly ONE item)\n- [ ] (STEP_ID=001) Fix add() so it returns the sum\n\n## Backlog\n\n## Done\n- [x] (STEP_ID=000) Initialized plan file\n\n## Notes\n";
const NO_CHANGE: &str = "The plan is right; no changes.";

/// A repo whose test fails until `add` adds.
fn calc_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("calc.py", "def add(a, b):\n    return a - b\n");
    repo.write(
        "test_calc.py",
        "import unittest\nfrom calc import add\n\n\nclass T(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n",
    );
    repo.write(
        "pipeline.yml",
        "version: 1\ntests:\n  cmds:\n    - python3 -m unittest -q\n",
    );
    repo.write(".gitignore", "__pycache__/\n.aider_fsm/\n");
    repo.write("PLAN.md", PLAN);
    repo.commit_all();
    repo
}

fn block(path: &str, search: &str, replace: &str) -> String {
    format!("{path}\n```\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n```\n")
}

fn calc_edit(from: &str, to: &str) -> String {
    block(
        "calc.py",
        &format!("    return {from}\n"),
        &format!("    return {to}\n"),
    )
}

fn fix() -> String {
    format!("Use addition.\n\n{}", calc_edit("a - b", "a + b"))
}

fn mark_done() -> String {
    block(
        "PLAN.md",
        &format!("## Next (exactly ONE item)\n{STEP}\n"),
        "## Next (exactly ONE item)\n",
    ) + &block(
        "PLAN.md",
        "- [x] (STEP_ID=000) Initialized plan file\n",
        "- [x] (STEP_ID=000) Initialized plan file\n- [x] (STEP_ID=001) Fix add() so it returns the sum\n",
    )
}

fn server(replies: Vec<ScriptedReply>) -> ScriptedServer {
    ScriptedServer::start(Script {
        label: "test".into(),
        replies,
    })
    .unwrap_or_else(|e| panic!("scripted server: {e}"))
}

fn texts(replies: &[&str]) -> Vec<ScriptedReply> {
    replies.iter().map(|r| ScriptedReply::text(*r)).collect()
}

fn loop_command(repo: &TestRepo, base: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "run",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--env-file",
        "",
        "--model",
        "scripted-test",
        "--retry-backoff-ms",
        "10",
    ])
    .args(extra)
    .current_dir(repo.path())
    .env("OPENAI_API_KEY", "test-key")
    .env("OPENAI_API_BASE", base);
    cmd
}

fn run_loop(repo: &TestRepo, server: &ScriptedServer, extra: &[&str]) -> Run {
    let out = loop_command(repo, &server.base_url(), extra)
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    Run::from(out)
}

fn state(repo: &TestRepo) -> serde_json::Value {
    serde_json::from_str(&repo.read(".aider_fsm/state.json"))
        .unwrap_or_else(|e| panic!("state.json: {e}"))
}

/// Every record of the run's log.
fn log_events(repo: &TestRepo) -> Vec<serde_json::Value> {
    let run_id = state(repo)["run_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    repo.read(&format!(".aider_fsm/logs/run_{run_id}.jsonl"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l}: {e}")))
        .collect()
}

fn events_named<'a>(events: &'a [serde_json::Value], name: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

fn run_dir(repo: &TestRepo) -> PathBuf {
    let run_id = state(repo)["run_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    repo.path().join(".aider_fsm/artifacts").join(run_id)
}

fn phase_of(request: &RecordedRequest) -> String {
    let text = request.messages_text();
    text.lines()
        .find_map(|l| l.strip_prefix("PHASE: "))
        .unwrap_or_default()
        .to_string()
}

fn phases(server: &ScriptedServer) -> Vec<String> {
    server.requests().iter().map(phase_of).collect()
}

#[test]
fn a_run_goes_plan_execute_verify_to_done() {
    let repo = calc_repo();
    let server = server(texts(&[NO_CHANGE, &fix(), &mark_done(), NO_CHANGE]));
    // The base with /v1 must work as well as without (the other tests).
    let out = loop_command(&repo, &format!("{}/v1", server.base_url()), &[])
        .output()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let run = Run::from(out);
    run.expect_code(0);
    assert!(
        run.stdout.contains("DONE after 2 iteration(s)"),
        "{}",
        run.stdout
    );
    assert_eq!(repo.read("calc.py"), "def add(a, b):\n    return a + b\n");
    let plan = fsm_runner::plan::parse(&repo.read("PLAN.md"));
    assert!(plan.is_valid() && plan.next.is_none());
    assert!(plan.done.iter().any(|s| s.id == "001" && s.checked));

    assert_eq!(
        phases(&server),
        ["PLAN_UPDATE", "EXECUTE_STEP", "MARK_DONE", "PLAN_UPDATE"]
    );
    let requests = server.requests();
    for r in &requests {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.authorization.as_deref(), Some("Bearer test-key"));
        assert_eq!(r.body["model"], "scripted-test");
        assert!(
            r.body.get("tools").is_none(),
            "tools are offered only with --read-tools"
        );
    }
    // The snapshot carries the plan, the pipeline and the git status; execute names the step.
    let first = requests[0].messages_text();
    assert!(first.contains(STEP) && first.contains("python3 -m unittest -q"));
    assert!(first.contains("working tree clean"), "{first}");
    assert!(
        requests[1]
            .messages_text()
            .contains("(STEP_ID=001) Fix add()")
    );
    assert!(
        requests[1]
            .messages_text()
            .contains("current step: (STEP_ID=001) Fix add()")
    );

    let state = state(&repo);
    assert_eq!(state["finished"], true);
    assert_eq!(state["last_exit_reason"], "done");
    assert_eq!(state["fsm_state"], "S5_DECIDE");
    assert_eq!(state["last_test_rc"], 0);
    assert_eq!(state["model"], "scripted-test");
    let events = log_events(&repo);
    let calls = events_named(&events, "model_call");
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| c["total_tokens"].as_u64().is_some()
        && c["latency_ms"].as_u64().is_some()
        && c["fsm_state"].is_string()));
    let verifies = events_named(&events, "verify");
    assert_eq!(verifies.len(), 2);
    assert_eq!(verifies[0]["ok"], true);
    // Artifacts per compat §5, and every model exchange.
    let dir = run_dir(&repo);
    assert_eq!(
        artifact_json(&dir.join("iter_0001"), "summary.json")["ok"],
        true
    );
    assert!(dir.join("iter_0001/tests_cmd01_try01_stdout.txt").is_file());
    assert!(
        dir.join("iter_0001/model/02_execute_step_try1_reply.txt")
            .is_file()
    );
    assert!(dir.join("iter_0002/summary.json").is_file());
}

#[test]
fn a_plan_reply_that_edits_code_is_refused_whole_and_retried() {
    let repo = calc_repo();
    let sneaky = block("PLAN.md", "## Notes\n", "## Notes\n- sneaky note\n") + &fix();
    let server = server(texts(&[
        &sneaky,
        NO_CHANGE,
        &fix(),
        &mark_done(),
        NO_CHANGE,
    ]));
    let run = run_loop(&repo, &server, &[]);
    run.expect_code(0);
    // Nothing of the refused reply was written: neither the code nor the plan part.
    assert!(!repo.read("PLAN.md").contains("sneaky note"));
    let requests = server.requests();
    let retry = requests[1].messages_text();
    assert_eq!(phase_of(&requests[1]), "PLAN_UPDATE");
    assert!(retry.contains("was NOT applied"), "{retry}");
    assert!(
        retry.contains("the plan phase may only change `PLAN.md`"),
        "{retry}"
    );
    // The code was fixed later, by the execute phase.
    assert_eq!(phase_of(&requests[2]), "EXECUTE_STEP");
    assert_eq!(repo.read("calc.py"), "def add(a, b):\n    return a + b\n");
    let events = log_events(&repo);
    assert!(
        events_named(&events, "edit")
            .iter()
            .any(|e| e["applied"] == false && e["phase"] == "PLAN_UPDATE")
    );
}

#[test]
fn an_invalid_plan_three_times_ends_with_exit_2() {
    let repo = calc_repo();
    let two_next = block(
        "PLAN.md",
        &format!("{STEP}\n"),
        &format!("{STEP}\n- [ ] (STEP_ID=002) another\n"),
    );
    let server = server(texts(&[&two_next, &two_next, &two_next]));
    let run = run_loop(&repo, &server, &[]);
    run.expect_code(2);
    assert!(run.stdout.contains("next_count_not_one"), "{}", run.stdout);
    assert!(
        server.requests()[1]
            .messages_text()
            .contains("PLAN.md has errors: next_count_not_one")
    );
    // The plan is left as it was before the invalid replies.
    assert_eq!(repo.read("PLAN.md"), PLAN);
    assert_eq!(state(&repo)["last_exit_reason"], "plan_update_failed");
}

#[test]
fn execute_replies_touching_the_plan_the_pipeline_or_a_link_out_are_refused() {
    let repo = calc_repo();
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(outside.path(), repo.path().join("link"))
        .unwrap_or_else(|e| panic!("symlink: {e}"));
    let pipeline_before = repo.read("pipeline.yml");
    let edit_plan = block("PLAN.md", "## Notes\n", "## Notes\n- executed\n");
    let edit_pipeline = block(
        "pipeline.yml",
        "    - python3 -m unittest -q\n",
        "    - 'true'\n",
    );
    let link_out = block("link/evil.py", "", "print('escaped')\n");
    let server = server(texts(&[
        NO_CHANGE,
        &(edit_plan + &fix()),
        &edit_pipeline,
        &link_out,
        // Iteration 2: the step failed (no reply applied), so this is a fix.
        NO_CHANGE,
        &fix(),
        &mark_done(),
        NO_CHANGE,
    ]));
    let run = run_loop(&repo, &server, &[]);
    run.expect_code(0);
    assert!(!outside.path().join("evil.py").exists());
    assert_eq!(repo.read("pipeline.yml"), pipeline_before);
    assert!(!repo.read("PLAN.md").contains("- executed"));
    let requests = server.requests();
    assert!(
        requests[2]
            .messages_text()
            .contains("`PLAN.md` is protected")
    );
    assert!(
        requests[3]
            .messages_text()
            .contains("`pipeline.yml` is protected")
    );
    // The third refusal is not sent back (attempts are used up); it reaches the fix prompt.
    assert_eq!(phase_of(&requests[5]), "FIX");
    let fix_prompt = requests[5].messages_text();
    assert!(
        fix_prompt.contains("no reply could be applied"),
        "{fix_prompt}"
    );
    assert!(
        fix_prompt.contains("outside the repository"),
        "{fix_prompt}"
    );
    assert_eq!(repo.read("calc.py"), "def add(a, b):\n    return a + b\n");
}

#[test]
fn a_failed_verification_gets_a_fix_with_the_failure_tail_then_passes() {
    let repo = calc_repo();
    let wrong = calc_edit("a - b", "a * b");
    let good = calc_edit("a * b", "a + b");
    let server = server(texts(&[
        NO_CHANGE,
        &wrong,
        NO_CHANGE,
        &good,
        &mark_done(),
        NO_CHANGE,
    ]));
    let run = run_loop(&repo, &server, &[]);
    run.expect_code(0);
    assert_eq!(
        phases(&server),
        [
            "PLAN_UPDATE",
            "EXECUTE_STEP",
            "PLAN_UPDATE",
            "FIX",
            "MARK_DONE",
            "PLAN_UPDATE"
        ]
    );
    let fix_prompt = server.requests()[3].messages_text();
    assert!(fix_prompt.contains("Verification FAILED at stage `tests`"));
    assert!(
        fix_prompt.contains("AssertionError: 6 != 5"),
        "{fix_prompt}"
    );
    assert!(
        fix_prompt.contains("iter_0001"),
        "the artifacts path is in the prompt"
    );
    // The snapshot carries the run state and what changed since HEAD.
    for expected in [
        "fix attempts for it: 1 of at most 10",
        "last verification: FAILED at `tests`",
        " M calc.py",
        "1 file changed, 1 insertion(+), 1 deletion(-)",
    ] {
        assert!(fix_prompt.contains(expected), "{expected}: {fix_prompt}");
    }
    let dir = run_dir(&repo);
    assert_eq!(
        artifact_json(&dir.join("iter_0001"), "summary.json")["ok"],
        false
    );
    assert_eq!(
        artifact_json(&dir.join("iter_0002"), "summary.json")["ok"],
        true
    );
}

#[test]
fn max_fix_reached_blocks_the_step_with_the_failure_tail() {
    let repo = calc_repo();
    let wrong1 = calc_edit("a - b", "a * b");
    let wrong2 = calc_edit("a * b", "a ** b");
    let server = server(texts(&[NO_CHANGE, &wrong1, NO_CHANGE, &wrong2, NO_CHANGE]));
    let run = run_loop(&repo, &server, &["--max-fix", "1", "--max-iters", "3"]);
    // Iteration 3 finds no Next step, verifies, fails, and --max-iters ends the run.
    run.expect_code(1);
    assert!(
        run.stdout.contains("--max-iters 3 reached"),
        "{}",
        run.stdout
    );
    let text = repo.read("PLAN.md");
    let plan = fsm_runner::plan::parse(&text);
    assert!(plan.is_valid(), "{:?}", plan.errors);
    assert!(plan.next.is_none());
    assert!(
        plan.done
            .iter()
            .any(|s| s.id == "001" && s.text.starts_with("BLOCKED: "))
    );
    assert!(text.contains("- STEP_ID=001 blocked:"), "{text}");
    assert!(text.contains("AssertionError: 8 != 5"), "{text}");
    let events = log_events(&repo);
    assert_eq!(events_named(&events, "step_blocked").len(), 1);
    assert_eq!(events_named(&events, "repair_needed").len(), 1);
    assert_eq!(state(&repo)["last_exit_reason"], "max_iters");
}

#[test]
fn an_actions_file_from_the_model_runs_confined() {
    let repo = calc_repo();
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let escape = outside.path().join("escape.txt");
    let actions = format!(
        "version: 1\nactions:\n  - id: bootstrap\n    kind: run_cmd\n    cmd: \"echo ok > bootstrap.txt; echo pwned > {}; true\"\n",
        escape.display()
    );
    let reply = block(".aider_fsm/actions.yml", "", &actions) + &fix();
    let server = server(texts(&[NO_CHANGE, &reply, &mark_done(), NO_CHANGE]));
    let run = run_loop(&repo, &server, &[]);
    run.expect_code(0);
    assert_eq!(repo.read("bootstrap.txt"), "ok\n");
    assert!(!escape.exists(), "the action wrote outside the repo");
    assert!(!repo.path().join(".aider_fsm/actions.yml").exists());
    let results = artifact_json(
        &run_dir(&repo).join("iter_0001/actions"),
        "actions_results.json",
    );
    assert_eq!(results[0]["id"], "bootstrap");
    assert_eq!(results[0]["ok"], true);
    let grants = artifact_json(
        &run_dir(&repo).join("iter_0001/actions"),
        "bootstrap_grants.json",
    );
    assert!(!grants["confinement"].is_null(), "{grants}");
}

#[test]
fn a_429_is_retried_after_retry_after_then_succeeds() {
    let repo = calc_repo();
    let mut limited = ScriptedReply::status(429, r#"{"error":{"message":"slow down"}}"#);
    limited.headers.insert("Retry-After".into(), "1".into());
    let mut replies = vec![limited];
    replies.extend(texts(&[NO_CHANGE, &fix(), &mark_done(), NO_CHANGE]));
    let server = server(replies);
    let run = run_loop(&repo, &server, &[]);
    run.expect_code(0);
    let events = log_events(&repo);
    let first = events_named(&events, "model_call")[0];
    assert_eq!(first["http_attempts"], 2);
    // Retry-After: 1 won over the 10 ms backoff.
    assert!(
        first["latency_ms"].as_u64().unwrap_or_default() >= 1000,
        "{first}"
    );
}

#[test]
fn server_errors_until_give_up_stop_with_a_clear_error_and_a_resumable_state() {
    let repo = calc_repo();
    let errors = (0..3)
        .map(|_| ScriptedReply::status(503, "overloaded"))
        .collect();
    let server = server(errors);
    let run = run_loop(&repo, &server, &["--max-retries", "2"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("gave up after 3 attempts"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("HTTP 503"), "{}", run.stderr);
    assert!(run.stderr.contains("resumes it"), "{}", run.stderr);
    assert_eq!(server.requests().len(), 3);
    let state = state(&repo);
    assert_eq!(state["finished"], false);
    assert_eq!(state["fsm_state"], "S2_PLAN_UPDATE");
}

#[test]
fn bad_answers_get_errors_that_say_what_to_check() {
    let cases: Vec<(ScriptedReply, &str)> = vec![
        (
            ScriptedReply::status(200, "<html>this is not json</html>"),
            "is not a chat completion",
        ),
        (
            ScriptedReply::status(200, r#"{"choices": []}"#),
            "no choices",
        ),
        (
            ScriptedReply::status(401, r#"{"error":"bad key"}"#),
            "check OPENAI_API_KEY",
        ),
        (
            ScriptedReply::status(404, r#"{"error":"model not found"}"#),
            "unknown model `scripted-test`",
        ),
        // A hostile server cannot make the runner buffer an unbounded reply.
        (
            ScriptedReply::status(200, "x".repeat(33 << 20)),
            "the reply is larger than",
        ),
    ];
    for (reply, expected) in cases {
        let repo = calc_repo();
        let server = server(vec![reply]);
        let run = run_loop(&repo, &server, &[]);
        run.expect_code(2);
        assert!(
            run.stderr.contains(expected),
            "want {expected}: {}",
            run.stderr
        );
        // Not retried: these answers will not change.
        assert_eq!(server.requests().len(), 1);
        assert_eq!(repo.read("calc.py"), "def add(a, b):\n    return a - b\n");
    }
}

#[test]
fn a_run_killed_mid_iteration_resumes_to_done_with_both_parts_artifacts() {
    let repo = calc_repo();
    let mut slow = ScriptedReply::text(fix());
    slow.delay_ms = 2000;
    let first = server(vec![ScriptedReply::text(NO_CHANGE), slow]);
    let mut child = loop_command(&repo, &first.base_url(), &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    // Kill it while the execute request is in flight.
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.requests().len() < 2 {
        assert!(Instant::now() < deadline, "the run never asked to execute");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let killed = state(&repo);
    assert_eq!(killed["fsm_state"], "S3_EXECUTE_STEP");
    assert_eq!(killed["finished"], false);
    let run_id = killed["run_id"].as_str().unwrap_or_default().to_string();
    assert_eq!(repo.read("calc.py"), "def add(a, b):\n    return a - b\n");

    let second = server(texts(&[&fix(), &mark_done(), NO_CHANGE]));
    let run = run_loop(&repo, &second, &[]);
    run.expect_code(0);
    assert!(
        run.stderr
            .contains(&format!("resuming run {run_id} at S3_EXECUTE_STEP")),
        "{}",
        run.stderr
    );
    // The resumed run went straight to the execute phase of the same iteration.
    assert_eq!(
        phases(&second),
        ["EXECUTE_STEP", "MARK_DONE", "PLAN_UPDATE"]
    );
    assert_eq!(state(&repo)["run_id"], run_id.as_str());
    assert_eq!(repo.read("calc.py"), "def add(a, b):\n    return a + b\n");
    let model = run_dir(&repo).join("iter_0001/model");
    for name in [
        "01_plan_update_try1_reply.txt",
        "02_execute_step_try1_request.json",
        "03_execute_step_try1_reply.txt",
    ] {
        assert!(model.join(name).is_file(), "{name} missing");
    }
    let events = log_events(&repo);
    assert_eq!(events_named(&events, "run_start").len(), 1);
    assert_eq!(events_named(&events, "resumed").len(), 1);
    assert_eq!(events_named(&events, "run_end").len(), 1);
}

#[test]
fn a_protected_file_changed_by_a_command_is_restored_by_the_backstop() {
    // With the sandbox off nothing stops the command; the backstop must.
    for with_git in [true, false] {
        let repo = calc_repo();
        if !with_git {
            std::fs::remove_dir_all(repo.path().join(".git")).unwrap_or_else(|e| panic!("{e}"));
        }
        let pipeline_before = repo.read("pipeline.yml");
        let actions = "version: 1\nactions:\n  - kind: run_cmd\n    cmd: \"echo '# changed' >> pipeline.yml; echo stray > stray.txt\"\n";
        let reply = block(".aider_fsm/actions.yml", "", actions) + &fix();
        let server = server(texts(&[
            NO_CHANGE,
            &reply,
            NO_CHANGE,
            NO_CHANGE,
            &mark_done(),
            NO_CHANGE,
        ]));
        let run = run_loop(&repo, &server, &["--sandbox", "off"]);
        run.expect_code(0);
        assert_eq!(
            repo.read("pipeline.yml"),
            pipeline_before,
            "git: {with_git}"
        );
        let events = log_events(&repo);
        let restored = events_named(&events, "backstop_restored");
        assert_eq!(restored.len(), 1, "git: {with_git}: {events:?}");
        assert_eq!(restored[0]["paths"][0]["path"], "pipeline.yml");
        assert_eq!(
            restored[0]["paths"][0]["by"], "hash",
            "protected files are checked by content, git or not"
        );
        // A file the step may create stays.
        assert_eq!(repo.read("stray.txt"), "stray\n");
        // The iteration restarted: plan update and execute again.
        assert_eq!(
            phases(&server)[..4],
            ["PLAN_UPDATE", "EXECUTE_STEP", "PLAN_UPDATE", "EXECUTE_STEP"]
        );
    }
}

#[test]
fn the_plan_is_created_from_the_template_and_seeds_reach_the_prompt() {
    let repo = calc_repo();
    std::fs::remove_file(repo.path().join("PLAN.md")).unwrap_or_else(|e| panic!("{e}"));
    repo.write("notes/seed.md", "SEED-MARKER: prefer small steps\n");
    let server = server(texts(&[NO_CHANGE]));
    // One model call, then the template's step needs an execute reply the script lacks.
    let run = run_loop(
        &repo,
        &server,
        &[
            "--goal",
            "make add add",
            "--seed",
            "notes/seed.md",
            "--max-retries",
            "0",
        ],
    );
    run.expect_code(2);
    let plan = repo.read("PLAN.md");
    assert!(plan.contains("## Goal\nmake add add"));
    assert!(plan.contains("- [ ] TEST_CMD passes: `python3 -m unittest -q`"));
    assert!(plan.contains("(STEP_ID=001) Build Backlog"));
    let first = server.requests()[0].messages_text();
    assert!(first.contains("SEED-MARKER: prefer small steps"));
    assert!(
        run.stderr.contains("the script has no reply left"),
        "{}",
        run.stderr
    );
}

#[test]
fn run_without_a_key_says_how_to_get_one_and_preflight_only_is_verify() {
    let repo = calc_repo();
    let out = Command::new(BIN)
        .args([
            "run",
            "--repo",
            ".",
            "--pipeline",
            "pipeline.yml",
            "--env-file",
            "",
        ])
        .current_dir(repo.path())
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let run = Run::from(out);
    run.expect_code(2);
    assert!(run.stderr.contains("OPENAI_API_KEY is not set"));
    assert!(run.stderr.contains("fsm-runner demo"));

    let preflight = repo.run(&[
        "run",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--env-file",
        "",
        "--preflight-only",
        "--json",
    ]);
    preflight.expect_code(3);
    let json = preflight.json();
    assert_eq!(json["failed_stage"], "tests");
    assert!(
        json["artifacts_dir"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/preflight")
    );
}

#[test]
fn a_git_url_is_cloned_into_the_clone_dir() {
    let source = calc_repo();
    let bare = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bare_path = bare.path().join("calc.git");
    let status = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(source.path())
        .arg(&bare_path)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    let clones = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("file://{}", bare_path.display());
    let run = source.run(&[
        "run",
        "--repo",
        &url,
        "--clone-dir",
        &clones.path().display().to_string(),
        "--pipeline",
        "pipeline.yml",
        "--env-file",
        "",
        "--preflight-only",
    ]);
    // The clone has the failing test, so verification fails; the point is where it ran.
    run.expect_code(3);
    let cloned = clones.path().join("calc");
    assert!(cloned.join("calc.py").is_file(), "{}", run.stderr);
    assert!(run.stderr.contains("cloned"), "{}", run.stderr);
    assert!(cloned.join(".aider_fsm/artifacts").is_dir());
}

#[test]
fn the_demo_runs_the_loop_to_done_against_the_bundled_scripted_model() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let demo = dir.path().join("demo");
    let out = Command::new(BIN)
        .args(["demo", "--dir"])
        .arg(&demo)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let run = Run::from(out);
    run.expect_code(0);
    assert!(run.stdout.contains("SCRIPTED demo model"), "{}", run.stdout);
    assert!(
        run.stdout.contains("DONE after 3 iteration(s)"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("verification FAILED at `tests`"));
    let stats = std::fs::read_to_string(demo.join("stats.py")).unwrap_or_default();
    assert!(stats.contains("ordered[middle]) / 2"));
    let tests = Command::new("python3")
        .args(["-m", "unittest", "-q"])
        .current_dir(&demo)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        tests.status.success(),
        "the demo's fix does not pass its tests"
    );
    // A second demo into the same folder is refused rather than mixing runs.
    let again = Command::new(BIN)
        .args(["demo", "--dir"])
        .arg(&demo)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn a_git_daemon_url_is_cloned_shallow() {
    let source = calc_repo();
    source.write("second.txt", "a second commit\n");
    source.commit_all();
    let served = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let status = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(source.path())
        .arg(served.path().join("calc.git"))
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut daemon = Command::new("git")
        .arg("daemon")
        .arg("--reuseaddr")
        .arg("--export-all")
        .arg("--listen=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", served.path().display()))
        .arg(served.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("git daemon: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "git daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let clones = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let run = source.run(&[
        "run",
        "--repo",
        &format!("git://127.0.0.1:{port}/calc.git"),
        "--clone-dir",
        &clones.path().display().to_string(),
        "--pipeline",
        "pipeline.yml",
        "--env-file",
        "",
        "--preflight-only",
    ]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    run.expect_code(3);
    let cloned = clones.path().join("calc");
    assert!(cloned.join("second.txt").is_file(), "{}", run.stderr);
    // Depth 1: the clone knows only the newest commit.
    assert!(cloned.join(".git/shallow").is_file(), "not a shallow clone");
    let count = Command::new("git")
        .args(["rev-list", "--count", "HEAD"])
        .current_dir(&cloned)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "1");
}

fn tool_calls_body(calls: &[(&str, &str, &str)]) -> String {
    let calls: Vec<serde_json::Value> = calls
        .iter()
        .map(|(id, name, args)| {
            serde_json::json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
        })
        .collect();
    serde_json::json!({"choices": [{"message": {"role": "assistant", "content": null, "tool_calls": calls}}]})
        .to_string()
}

#[test]
fn read_tools_let_the_model_look_inside_the_repo_and_nowhere_else() {
    let repo = calc_repo();
    let outside = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(outside.path().join("secret.txt"), "TOP-SECRET\n")
        .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(outside.path(), repo.path().join("link"))
        .unwrap_or_else(|e| panic!("symlink: {e}"));
    let look = tool_calls_body(&[
        ("c1", "read_file", r#"{"path": "calc.py"}"#),
        ("c2", "read_file", r#"{"path": "link/secret.txt"}"#),
        ("c3", "search", r#"{"pattern": "return a"}"#),
        ("c4", "list_dir", r#"{"path": "."}"#),
        ("c5", "read_file", r#"{"path": "/etc/passwd"}"#),
    ]);
    let mut replies = vec![ScriptedReply::status(200, look)];
    replies.extend(texts(&[NO_CHANGE, &fix(), &mark_done(), NO_CHANGE]));
    let server = server(replies);
    let run = run_loop(&repo, &server, &["--read-tools"]);
    run.expect_code(0);
    let requests = server.requests();
    assert!(requests[0].body["tools"].is_array());
    let answers: std::collections::BTreeMap<String, String> = requests[1].body["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["role"] == "tool")
                .map(|m| {
                    (
                        m["tool_call_id"].as_str().unwrap_or_default().to_string(),
                        m["content"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(answers["c1"].contains("return a - b"), "{answers:?}");
    assert!(
        answers["c2"].contains("outside the repository"),
        "{answers:?}"
    );
    assert!(
        !answers
            .values()
            .any(|a| a.contains("TOP-SECRET") || a.contains("root:"))
    );
    assert!(
        answers["c3"].contains("calc.py:2:     return a - b"),
        "{answers:?}"
    );
    let listing: Vec<&str> = answers["c4"].lines().collect();
    assert!(listing.contains(&"test_calc.py"), "{answers:?}");
    assert!(
        !listing.contains(&".git/"),
        "the runner's folders are not listed"
    );
    assert!(answers["c5"].starts_with("error:"), "{answers:?}");
    let events = log_events(&repo);
    assert_eq!(events_named(&events, "model_call")[0]["tool_rounds"], 1);
}

#[test]
fn a_server_that_refuses_tools_gets_plain_requests() {
    let repo = calc_repo();
    let mut replies = vec![ScriptedReply::status(
        400,
        r#"{"error": "tools are not supported"}"#,
    )];
    replies.extend(texts(&[NO_CHANGE, &fix(), &mark_done(), NO_CHANGE]));
    let server = server(replies);
    let run = run_loop(&repo, &server, &["--read-tools"]);
    run.expect_code(0);
    let requests = server.requests();
    assert!(requests[0].body["tools"].is_array());
    assert!(requests[1..].iter().all(|r| r.body.get("tools").is_none()));
}
