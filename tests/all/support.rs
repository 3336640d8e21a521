//! Shared helpers: a temp git repo per test and a command builder for the real binary.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_fsm-runner");

/// A temporary git repository with a committed initial state.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
}

impl TestRepo {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fsm-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let repo = TestRepo { dir };
        repo.git(&["init", "-q"]);
        repo
    }

    /// A copy of one of the example repositories.
    pub fn example(name: &str) -> Self {
        let repo = TestRepo::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        copy_tree(&src, repo.path());
        repo.commit_all();
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let path = self.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn git(&self, args: &[&str]) {
        let status = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .unwrap_or_else(|e| panic!("git: {e}"));
        assert!(status.success(), "git {args:?} failed");
    }

    pub fn commit_all(&self) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", "fixture", "--allow-empty"]);
    }

    /// Runs `fsm-runner <args>` with `--repo` pointing here and `cwd` in the repo.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(self.path());
        Run::from(cmd.output().unwrap_or_else(|e| panic!("spawn: {e}")))
    }

    /// `verify --json` with a pipeline written to pipeline.yml.
    pub fn verify_pipeline(&self, pipeline: &str) -> Run {
        self.write("pipeline.yml", pipeline);
        self.run(&[
            "verify",
            "--repo",
            ".",
            "--pipeline",
            "pipeline.yml",
            "--json",
        ])
    }
}

pub fn copy_tree(src: &Path, dst: &Path) {
    let entries = std::fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == ".aider_fsm" || name == "__pycache__" || name == "metrics.json" {
            continue;
        }
        let to = dst.join(&name);
        if entry.path().is_dir() {
            std::fs::create_dir_all(&to).unwrap_or_else(|e| panic!("mkdir: {e}"));
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap_or_else(|e| panic!("copy: {e}"));
        }
    }
}

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The artifacts dir a `--json` run reported.
    pub fn artifacts(&self) -> PathBuf {
        PathBuf::from(self.json()["artifacts_dir"].as_str().unwrap_or_default())
    }
}

/// Reads an artifact as text.
pub fn artifact(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("artifact {name}: {e}"))
}

pub fn artifact_json(dir: &Path, name: &str) -> serde_json::Value {
    serde_json::from_str(&artifact(dir, name)).unwrap_or_else(|e| panic!("artifact {name}: {e}"))
}

/// Processes whose command line contains `marker` (to prove nothing outlived a stage).
pub fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    found
}

/// Waits briefly for processes to disappear (they are killed, reaping can lag a moment).
pub fn assert_no_processes(marker: &str) {
    for _ in 0..50 {
        if processes_with(marker).is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("processes left running: {:?}", processes_with(marker));
}

/// A unique marker for process names in one test.
pub fn marker(name: &str) -> String {
    format!("fsmmark{}{}", name, std::process::id())
}

/// A one-shot HTTP server on loopback answering `body` to every request.
pub fn http_server(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}
