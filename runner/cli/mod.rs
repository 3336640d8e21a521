//! The command line: clap structs that mirror the flags and do no I/O, and the dispatch from
//! a parsed command to the code that runs it.
//!
//! Owns: flag names, help text and exit codes. Must not: hold logic that a library caller
//! would need; each subcommand resolves its settings and hands over.

mod actions;
mod demo;
mod doctor;
mod plugin;
mod policy;
mod run;
mod sandbox;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::policy::SandboxMode;
use crate::policy::rules::Unattended;

/// Exit codes shared by every subcommand (compat §6).
pub mod exit {
    pub const OK: u8 = 0;
    pub const MAX_ITERS: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const VERIFY_FAILED: u8 = 3;
}

#[derive(Debug, Parser)]
#[command(
    name = "fsm-runner",
    version,
    about = "Plan → execute → verify on an untrusted repository, with every command confined"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive a model through plan → execute → verify on a repository until the plan is done.
    Run(RunArgs),
    /// The whole loop on a bundled example repo with a real bug, against a bundled SCRIPTED
    /// model (canned replies, no API key): see what a run looks like.
    Demo(DemoArgs),
    /// Serve a script of canned chat-completion replies on loopback (an OpenAI-compatible
    /// stand-in for demos, tests and benchmarks; it is not a model).
    ScriptedModel(ScriptedModelArgs),
    /// Run a repository's verification contract (pipeline.yml) once, without a model.
    Verify(VerifyArgs),
    /// Work with `.aider_fsm/actions.yml` files.
    #[command(subcommand)]
    Actions(ActionsCommand),
    /// Validate a policy file or show the grants each stage gets.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run one command under a policy, for debugging policies and for benchmarks.
    #[command(subcommand)]
    Sandbox(SandboxCommand),
    /// Report what this machine's kernel can enforce, and what that means for policies.
    Doctor(DoctorArgs),
    /// Verifier plugins (WASI components): list, inspect, run.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Where `--repo` URLs and `owner/name` are cloned (default: fsm_runner_targets in the temp dir).
    #[arg(long)]
    pub clone_dir: Option<PathBuf>,
    /// The goal, written into a new plan.
    #[arg(long)]
    pub goal: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// A file whose text is appended to every snapshot (repeatable).
    #[arg(long = "seed", value_name = "FILE")]
    pub seeds: Vec<PathBuf>,
    /// End the run (exit 1) after this many iterations.
    #[arg(long, default_value_t = 200)]
    pub max_iters: u32,
    /// Fix attempts per step before it is marked blocked.
    #[arg(long, default_value_t = 10)]
    pub max_fix: u32,
    /// The plan file, relative to the repo.
    #[arg(long, default_value = "PLAN.md")]
    pub plan_path: String,
    /// Offer the model read-only tools (read_file, list_dir, search) through tool calling;
    /// a server that refuses tools gets plain requests.
    #[arg(long)]
    pub read_tools: bool,
    /// Verify once and stop (same as `fsm-runner verify`).
    #[arg(long)]
    pub preflight_only: bool,
    /// With --preflight-only: print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// How the model is reached; the endpoint and key come from the environment.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// The model name sent to the OpenAI-compatible endpoint (OPENAI_API_BASE, key OPENAI_API_KEY).
    #[arg(long, default_value = "gpt-4o-mini")]
    pub model: String,
    /// Seconds one request may take.
    #[arg(long, default_value_t = 300.0)]
    pub request_timeout: f64,
    /// Retries on 429, 5xx and connection errors.
    #[arg(long, default_value_t = 4)]
    pub max_retries: u32,
    /// The first retry's wait in milliseconds (doubling; a server's Retry-After wins).
    #[arg(long, default_value_t = 1000)]
    pub retry_backoff_ms: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo repo is created (must not exist or be empty; default: a new temp folder, kept).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// `off` runs the demo's tests without kernel confinement.
    #[arg(long, value_enum)]
    pub sandbox: Option<SandboxMode>,
}

#[derive(Debug, Args)]
pub struct ScriptedModelArgs {
    /// The script: YAML or JSON with `replies:` (each `content:`, or `status:` + `body:`).
    #[arg(long)]
    pub script: PathBuf,
    /// The loopback port (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// The built-in plugins.
    List,
    /// A plugin's name, version and API version.
    Info {
        /// A built-in name or a path to a .wasm component.
        plugin: String,
    },
    /// Run a plugin's `verify` once, under the policy's grants for it.
    Run(PluginRunArgs),
}

#[derive(Debug, Args)]
pub struct PluginRunArgs {
    /// A built-in name or a path to a .wasm component.
    pub plugin: String,
    /// The plugin's config: JSON text, or @FILE holding JSON.
    #[arg(long, default_value = "{}")]
    pub config: String,
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The repository granted to the plugin (as /repo by default).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Call `verify` this many times (after loading once) and report the mean time per call.
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; errors name file:line:column and the field.
    Check { file: PathBuf },
    /// Print the effective grants of every stage.
    Explain {
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Show the compat command rules of this pipeline next to the policy's.
        #[arg(long)]
        pipeline: Option<PathBuf>,
        /// The repository named roots resolve against.
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Run CMD ARGS... confined under the policy's grants for one stage.
    Exec(SandboxExecArgs),
}

#[derive(Debug, Args)]
pub struct SandboxExecArgs {
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The stage whose grants apply.
    #[arg(long, default_value = "tests")]
    pub stage: String,
    /// The repository (writable, and the working directory).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// `off` runs without kernel confinement.
    #[arg(long, value_enum)]
    pub sandbox: Option<SandboxMode>,
    /// Timeout in seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// Run an actions file the way the loop does (confined, recorded, then deleted).
    Run(ActionsRunArgs),
}

#[derive(Debug, Args)]
pub struct ActionsRunArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The actions file (default `.aider_fsm/actions.yml` in the repo).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The plan file, protected from writes (relative to the repo).
    #[arg(long, default_value = "PLAN.md")]
    pub plan_path: PathBuf,
    /// Keep the file instead of deleting it after the run.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

/// Flags shared by every command that runs a repository's commands.
#[derive(Debug, Args, Clone)]
pub struct RepoArgs {
    /// The target repository: a path (`run` also takes a git URL or GitHub `owner/name`, cloned shallow).
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// The pipeline file (relative to the current directory, else to the repo).
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// The tests command; wins over `tests.cmds` (default `pytest -q`).
    #[arg(long)]
    pub test_cmd: Option<String>,
    /// Where artifacts go (default: the pipeline's `artifacts.out_dir`, else `.aider_fsm/artifacts` in the repo).
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
    /// strict refuses commands that look interactive and sets CI=1 and friends; guided lets `auth.interactive` commands use the terminal.
    #[arg(long, value_enum, default_value_t = Unattended::Strict)]
    pub unattended: Unattended,
    /// A .env file loaded into the runner's environment (relative to the current directory; empty disables).
    #[arg(long, default_value = ".env")]
    pub env_file: String,
    /// Let .env values replace variables that are already set.
    #[arg(long)]
    pub env_override: bool,
    /// The policy file granting filesystem, network, environment and limits (default: the built-in offline policy).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// `off` runs commands without kernel confinement (loud, and recorded in the artifacts).
    #[arg(long, value_enum)]
    pub sandbox: Option<SandboxMode>,
}

impl RepoArgs {
    /// The settings of a one-off command (`sandbox exec`, `plugin run`): no pipeline, no
    /// `.env`, strict mode.
    pub fn one_off(repo: PathBuf, policy: Option<PathBuf>, sandbox: Option<SandboxMode>) -> Self {
        RepoArgs {
            repo,
            pipeline: None,
            test_cmd: None,
            artifacts_dir: None,
            unattended: Unattended::Strict,
            env_file: String::new(),
            env_override: false,
            policy,
            sandbox,
        }
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Print one JSON object instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

/// Parses the arguments, runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    // Commands run as the same user: keep them from reading this process's memory and
    // /proc/<pid>/environ, where the API key lives.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // Printing into a closed pipe (`fsm-runner ... | head`) ends the process quietly, as
    // command-line tools do. Writes to sockets never raise SIGPIPE (std sends MSG_NOSIGNAL).
    // SAFETY: restoring a signal's default disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::ScriptedModel(args) => demo::serve_script(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Actions(ActionsCommand::Run(args)) => actions::run(&args),
        Command::Policy(cmd) => policy::run(&cmd),
        Command::Sandbox(SandboxCommand::Exec(args)) => sandbox::exec(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Plugin(cmd) => plugin::run(&cmd),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit::BAD_INPUT)
        }
    }
}
