//! The one way to run an untrusted command.
//!
//! Owns: spawning, the wall-clock timeout, killing the whole process tree, bounded output
//! capture and the result record. Every stage and every action goes through [`run`]. The
//! command is started by a helper (this binary re-executed with [`HELPER_ARG`]) so that
//! everything that must happen between `fork` and `exec` happens in a single-threaded process
//! with no async runtime. Must not: decide *what* may run (that is `policy`) or write
//! artifacts (that is `artifacts`).

pub mod capture;
pub mod confine;
pub mod grants;
pub mod helper;
mod process;
pub mod proxy;
pub mod wasm;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use capture::Capture;
pub use process::Background;

/// The first argument that turns this binary into the sandbox helper.
pub const HELPER_ARG: &str = "__sandbox-helper";

/// The old tool kept at most 2,000,000 characters of each text artifact.
pub const DEFAULT_OUTPUT_CAP: usize = 2_000_000;

/// How long processes a command leaves behind may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Lifetime {
    /// Everything the command started is killed when the command ends.
    #[default]
    Command,
    /// Processes left running (a service started by `deploy.setup`) live until the returned
    /// [`Background`] is dropped; the command's own result is reported as soon as it exits.
    Session,
}

/// Everything the helper needs to start one command. Nothing is inherited: the environment,
/// working directory and stdin are exactly what is written here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// Give the command the runner's terminal as stdin (guided interactive auth only).
    pub interactive: bool,
    pub lifetime: Lifetime,
    /// Kernel confinement; `None` runs the command unconfined (`--sandbox off`).
    pub confinement: Option<grants::Confinement>,
}

impl CommandSpec {
    /// A shell command line run by `bash -c` (or `sh -c` where bash is missing).
    pub fn shell(cmd: &str, cwd: PathBuf, env: Vec<(String, String)>) -> Self {
        CommandSpec {
            argv: vec![
                shell_program().to_string(),
                "-c".to_string(),
                cmd.to_string(),
            ],
            cwd,
            env,
            timeout: None,
            interactive: false,
            lifetime: Lifetime::Command,
            confinement: None,
        }
    }
}

fn shell_program() -> &'static str {
    if std::path::Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

/// What happened to a command.
#[derive(Debug, Clone)]
pub struct CommandOutcome {
    /// The exit code; 124 on timeout, 128+N when killed by signal N.
    pub rc: i32,
    pub timed_out: bool,
    pub duration: Duration,
    pub stdout: Capture,
    pub stderr: Capture,
}

/// The exit code of a command killed by its timeout, as `timeout(1)` reports it.
pub const TIMEOUT_RC: i32 = 124;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot locate the fsm-runner executable to start the sandbox helper: {0}")]
    CurrentExe(std::io::Error),
    #[error("cannot start the sandbox helper: {0}")]
    Spawn(std::io::Error),
    #[error("sandbox helper i/o failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the sandbox helper ended without a result ({0})")]
    HelperDied(String),
}

/// Runs one command under the helper. Output beyond `output_cap` bytes per stream is dropped
/// from the middle. With [`Lifetime::Session`], processes the command left running are
/// returned as a [`Background`] that kills them when dropped.
pub fn run(
    spec: &CommandSpec,
    output_cap: usize,
) -> Result<(CommandOutcome, Option<Background>), SandboxError> {
    process::run(spec, output_cap)
}
