//! Attacks from a hostile repository (tests/fixtures/hostile-repo), each run next to the
//! fixture's legitimate tests under the same policy: the attempt must fail AND the legitimate
//! work must succeed.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const LEGIT: &str = "python3 -m unittest -q";

/// A copy of the hostile fixture in a fresh git repo, with its own policy and pipeline.
struct Hostile {
    repo: TestRepo,
}

impl Hostile {
    fn new() -> Self {
        let repo = TestRepo::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile-repo");
        copy_tree(&src, repo.path());
        repo.write("pipeline.yml", "tests:\n  cmds: [true]\n");
        repo.commit_all();
        Hostile { repo }
    }

    /// Runs the legitimate tests then `attack` in the tests stage; returns the run and the
    /// attack's output line.
    fn attack(&self, attack: &str, policy: Option<&str>, env: &[(&str, &str)]) -> (Run, String) {
        let pipeline =
            format!("tests:\n  cmds:\n    - '{LEGIT}'\n    - 'python3 attack.py {attack}'\n");
        self.repo.write("pipeline.yml", &pipeline);
        let mut args = vec![
            "verify",
            "--repo",
            ".",
            "--pipeline",
            "pipeline.yml",
            "--json",
        ];
        let policy_path;
        if let Some(text) = policy {
            // Outside the repo, so the hostile code cannot have written it.
            policy_path = self.repo.path().with_extension("policy.yml");
            std::fs::write(&policy_path, text).unwrap_or_else(|e| panic!("{e}"));
            args.extend(["--policy", policy_path.to_str().unwrap_or_default()]);
        }
        let mut cmd = Command::new(BIN);
        cmd.args(&args).current_dir(self.repo.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let run = Run::from(cmd.output().unwrap_or_else(|e| panic!("{e}")));
        let stdout = artifact(&run.artifacts(), "tests_cmd02_try01_stdout.txt");
        let stderr = artifact(&run.artifacts(), "tests_cmd02_try01_stderr.txt");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("RESULT: "))
            .unwrap_or_else(|| panic!("attack printed no result:\n{stdout}\n{stderr}"))
            .to_string();
        (run, line)
    }
}

/// The legitimate tests passed (exit 0) and the attack reported itself blocked.
fn assert_blocked_and_legit_ok(run: &Run, line: &str) {
    run.expect_code(0);
    let legit = artifact(&run.artifacts(), "tests_cmd01_try01_result.json");
    assert!(
        legit.contains("\"rc\": 0"),
        "legitimate tests failed: {legit}"
    );
    assert!(line.starts_with("RESULT: blocked"), "{line}");
}

/// A file planted in the runner's real HOME for the duration of a test.
struct Planted(PathBuf);

impl Planted {
    fn new(rel: &str, content: &str) -> Self {
        let home = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
        let path = home.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(&path, content).unwrap_or_else(|e| panic!("{e}"));
        Planted(path)
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn secret(tag: &str) -> String {
    format!("SECRET-{tag}-{}", std::process::id())
}

#[test]
fn cannot_read_a_secret_in_the_real_home() {
    let value = secret("ssh");
    let key = Planted::new(
        &format!(".ssh/fsm_runner_test_{}", std::process::id()),
        &value,
    );
    let plain = Planted::new(
        &format!("fsm_runner_test_{}.txt", std::process::id()),
        &value,
    );
    let h = Hostile::new();
    for path in [&key.0, &plain.0] {
        let (run, line) = h.attack(&format!("read_file {}", path.display()), None, &[]);
        assert_blocked_and_legit_ok(&run, &line);
        assert!(!line.contains(&value), "{line}");
    }
}

#[test]
fn cannot_read_etc_shadow() {
    let h = Hostile::new();
    let (run, line) = h.attack("read_file /etc/shadow", None, &[]);
    assert_blocked_and_legit_ok(&run, &line);
    assert!(!line.contains("root:"), "{line}");
}

#[test]
fn cannot_write_outside_the_repo() {
    let h = Hostile::new();
    let outside = std::env::temp_dir().join(format!("fsm-hostile-{}", std::process::id()));
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(format!("fsm-hostile-{}", std::process::id()));
    for target in [&outside, &home] {
        let (run, line) = h.attack(&format!("write_file {}", target.display()), None, &[]);
        assert_blocked_and_legit_ok(&run, &line);
        assert!(!target.exists(), "{} was created", target.display());
    }
    // The legitimate test's writes inside the repo landed.
    assert_eq!(h.repo.read("build-output.txt"), "built\n");
}

#[test]
fn cannot_change_the_plan_the_pipeline_or_git_internals() {
    let h = Hostile::new();
    for target in [
        "PLAN.md",
        "pipeline.yml",
        ".git/hooks/pre-commit",
        ".git/config",
        ".aider_fsm/state.json",
    ] {
        let before = std::fs::read(h.repo.path().join(target)).ok();
        let (run, line) = h.attack(&format!("write_file {target}"), None, &[]);
        assert_blocked_and_legit_ok(&run, &line);
        let after = std::fs::read(h.repo.path().join(target)).ok();
        if target != "pipeline.yml" {
            assert_eq!(before, after, "{target} changed");
        }
        assert!(!h.repo.read("pipeline.yml").contains("pwned"));
    }
}

#[test]
fn cannot_see_the_api_key_in_its_environment_or_the_runners() {
    let h = Hostile::new();
    let key = secret("sk");
    let env = [
        ("OPENAI_API_KEY", key.as_str()),
        ("DEPLOY_TOKEN", "tok-value"),
    ];
    let (run, line) = h.attack("env OPENAI_API_KEY", None, &env);
    assert_blocked_and_legit_ok(&run, &line);
    let (run, line) = h.attack("env DEPLOY_TOKEN", None, &env);
    assert_blocked_and_legit_ok(&run, &line);
    let (run, line) = h.attack(&format!("proc_environ {key}"), None, &env);
    assert_blocked_and_legit_ok(&run, &line);
    // Even a policy granting OPENAI_* by prefix does not pass the key: only its exact name does.
    let prefix_policy = "defaults:\n  filesystem:\n    read: [system, toolchains]\n    write: [repo, tmp]\n  env: [PATH, OPENAI_*]\n";
    let (run, line) = h.attack("env OPENAI_API_KEY", Some(prefix_policy), &env);
    assert_blocked_and_legit_ok(&run, &line);
}

#[test]
fn network_none_blocks_tcp_udp_and_dns_to_the_host() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    udp.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
    let tcp_port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let udp_port = udp.local_addr().map(|a| a.port()).unwrap_or_default();
    let h = Hostile::new();
    let (run, line) = h.attack(&format!("tcp 127.0.0.1 {tcp_port}"), None, &[]);
    assert_blocked_and_legit_ok(&run, &line);
    assert!(
        listener.accept().is_err(),
        "the host listener got a connection"
    );
    let (run, line) = h.attack(&format!("udp 127.0.0.1 {udp_port}"), None, &[]);
    assert_blocked_and_legit_ok(&run, &line);
    let mut buf = [0u8; 16];
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "the host UDP socket got a datagram"
    );
    let (run, line) = h.attack("dns localhost.localdomain.example", None, &[]);
    assert_blocked_and_legit_ok(&run, &line);
}

#[test]
fn allowlist_reaches_granted_hosts_only_through_the_proxy() {
    let granted = http_server("granted-body");
    let other = http_server("forbidden-body");
    let policy = format!(
        "defaults:\n  filesystem:\n    read: [system, toolchains]\n    write: [repo, tmp]\n  env: [PATH]\nstages:\n  tests:\n    network: [\"127.0.0.1:{granted}\"]\n"
    );
    let h = Hostile::new();
    // Legitimate: the granted host answers through the proxy.
    let (run, line) = h.attack(
        &format!("http http://127.0.0.1:{granted}/"),
        Some(&policy),
        &[],
    );
    run.expect_code(0);
    assert!(
        line.starts_with("RESULT: escaped") && line.contains("granted-body"),
        "{line}"
    );
    // The attack: another host (port) is refused by the proxy...
    let (run, line) = h.attack(
        &format!("http http://127.0.0.1:{other}/"),
        Some(&policy),
        &[],
    );
    assert_blocked_and_legit_ok(&run, &line);
    assert!(line.contains("403"), "{line}");
    // ...and a direct connection, bypassing the proxy, reaches nothing.
    let (run, line) = h.attack(&format!("tcp 127.0.0.1 {granted}"), Some(&policy), &[]);
    assert_blocked_and_legit_ok(&run, &line);
    let log = artifact(&run.artifacts(), "tests_network.json");
    let _ = log;
    let (run, _) = h.attack(
        &format!("http http://127.0.0.1:{other}/"),
        Some(&policy),
        &[],
    );
    let decisions = artifact_json(&run.artifacts(), "tests_network.json");
    let denied = decisions
        .as_array()
        .map_or(0, |d| d.iter().filter(|x| x["allowed"] == false).count());
    assert!(denied >= 1, "{decisions}");
}

const LIMITS_POLICY: &str = "defaults:\n  filesystem:\n    read: [system, toolchains]\n    write: [repo, tmp]\n  env: [PATH]\n  limits:\n    memory_mb: 1024\n    file_size_mb: 16\n";

/// Whether `doctor` says this machine can enforce `limits.processes`.
fn process_limits_supported() -> bool {
    let out = Command::new(BIN)
        .args(["doctor", "--json"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    json["checks"].as_array().is_some_and(|checks| {
        checks
            .iter()
            .any(|c| c["name"] == "process limits" && c["ok"] == true)
    })
}

#[test]
fn a_fork_bomb_hits_the_process_limit() {
    let h = Hostile::new();
    let policy = LIMITS_POLICY.replace("  limits:\n", "  limits:\n    processes: 64\n");
    if !process_limits_supported() {
        // Fail closed: the stage is refused rather than run without the limit.
        h.repo.write("pipeline.yml", "tests:\n  cmds: [true]\n");
        let path = h.repo.path().with_extension("procs.yml");
        std::fs::write(&path, &policy).unwrap_or_else(|e| panic!("{e}"));
        let run = h.repo.run(&[
            "verify",
            "--repo",
            ".",
            "--pipeline",
            "pipeline.yml",
            "--policy",
            path.to_str().unwrap_or_default(),
            "--json",
        ]);
        run.expect_code(3);
        assert!(artifact(&run.artifacts(), "tests_stderr.txt").contains("sandbox_unavailable"));
        return;
    }
    let (run, line) = h.attack("forkbomb 3000", Some(&policy), &[]);
    assert_blocked_and_legit_ok(&run, &line);
    assert!(line.contains("fork refused after"), "{line}");
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let h = Hostile::new();
    let (run, line) = h.attack("membomb 4096", Some(LIMITS_POLICY), &[]);
    assert_blocked_and_legit_ok(&run, &line);
}

#[test]
fn a_2gb_file_hits_the_file_size_limit() {
    let h = Hostile::new();
    let (run, line) = h.attack("bigfile 2048", Some(LIMITS_POLICY), &[]);
    assert_blocked_and_legit_ok(&run, &line);
    let size = std::fs::metadata(h.repo.path().join("big.bin"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(size <= 16 * 1024 * 1024, "big.bin is {size} bytes");
}

#[test]
fn a_daemon_does_not_outlive_its_stage() {
    let h = Hostile::new();
    let mark = marker("hostiledaemon");
    let (run, line) = h.attack(&format!("daemon {mark}"), None, &[]);
    assert_blocked_and_legit_ok(&run, &line);
    assert_no_processes(&mark);
}

#[test]
fn cannot_ptrace_the_runner() {
    let h = Hostile::new();
    let (run, line) = h.attack("ptrace fsm-runner", None, &[]);
    assert_blocked_and_legit_ok(&run, &line);
}

#[test]
fn fails_closed_when_user_namespaces_are_unavailable() {
    let Ok(unshare) = which("unshare") else {
        eprintln!("skipped: no unshare(1) to take user namespaces away");
        return;
    };
    let h = Hostile::new();
    h.repo
        .write("pipeline.yml", &format!("tests:\n  cmds: ['{LEGIT}']\n"));
    // Inside a user namespace whose limit of nested namespaces is 0, the runner cannot make
    // its own: the stage must be refused, not run unconfined.
    let policy = h.repo.path().with_extension("nolimits.yml");
    std::fs::write(&policy, "defaults:\n  filesystem:\n    read: [system, toolchains]\n    write: [repo, tmp]\n  env: [PATH]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && exec {BIN} verify --repo . --pipeline pipeline.yml --policy {} --json",
        policy.display()
    );
    let out = Command::new(unshare)
        .args(["--user", "--map-root-user", "--", "sh", "-c", &script])
        .current_dir(h.repo.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let run = Run::from(out);
    if run.stdout.trim().is_empty() {
        eprintln!(
            "skipped: this machine does not allow the outer user namespace: {}",
            run.stderr
        );
        return;
    }
    run.expect_code(3);
    assert_eq!(run.json()["tests_rc"], 126);
    let stderr = artifact(&run.artifacts(), "tests_stderr.txt");
    assert!(
        stderr.contains("sandbox_unavailable") && stderr.contains("user namespaces"),
        "{stderr}"
    );
}

#[test]
fn sandbox_off_is_loud_and_recorded() {
    let h = Hostile::new();
    h.repo
        .write("pipeline.yml", &format!("tests:\n  cmds: ['{LEGIT}']\n"));
    let run = h.repo.run(&[
        "verify",
        "--repo",
        ".",
        "--pipeline",
        "pipeline.yml",
        "--sandbox",
        "off",
        "--json",
    ]);
    run.expect_code(0);
    assert!(run.stderr.contains("sandbox is OFF"), "{}", run.stderr);
    assert_eq!(
        artifact_json(&run.artifacts(), "summary.json")["sandbox"],
        "off"
    );
    assert_eq!(
        artifact_json(&run.artifacts(), "tests_grants.json")["confinement"],
        serde_json::Value::Null
    );
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}
