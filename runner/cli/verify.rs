//! `fsm-runner verify`: resolve the settings, run the pipeline once, print the outcome.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::{RepoArgs, VerifyArgs, exit};
use crate::artifacts::{self, ArtifactDir};
use crate::envfile;
use crate::pipeline::verify::{Verification, VerifySettings, VerifySummary};
use crate::pipeline::{self, Pipeline};
use crate::policy::{Policy, SandboxMode};
use crate::repo::Repo;
use crate::sandbox::grants::RunPaths;

/// The default artifacts folder, relative to the repo (compat §2).
pub const DEFAULT_OUT_DIR: &str = ".aider_fsm/artifacts";

/// What `verify` resolved from its flags, the pipeline and the environment.
pub struct Resolved {
    pub repo: Repo,
    pub pipeline: Option<Pipeline>,
    pub out_root: PathBuf,
    pub settings: VerifySettings,
    /// The run's private directory (commands' HOME and the proxy sockets); removed on drop.
    #[allow(dead_code)] // held, not read: dropping it removes the directory
    pub private_dir: tempfile::TempDir,
}

/// Loads the policy (`--policy`, else the built-in one) and applies `--sandbox`.
pub fn load_policy(args: &RepoArgs) -> anyhow::Result<Policy> {
    let mut policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin()?,
    };
    if let Some(mode) = args.sandbox {
        policy.sandbox = mode;
    }
    Ok(policy)
}

/// The paths commands must not change, as host paths.
fn protected_paths(repo: &Repo, contract: &[Option<&Path>]) -> Vec<PathBuf> {
    let mut out = vec![
        repo.root().join(".git"),
        repo.root().join(".aider_fsm"),
        repo.root().join("PLAN.md"),
    ];
    for path in contract.iter().flatten() {
        if let Ok(real) = std::fs::canonicalize(path)
            && real.starts_with(repo.root())
            && !out.contains(&real)
        {
            out.push(real);
        }
    }
    out
}

/// Finds the pipeline file: as given when it exists from here, else inside the repo.
fn pipeline_path(arg: &Path, repo: &Repo) -> PathBuf {
    if arg.is_absolute() || arg.exists() {
        return arg.to_path_buf();
    }
    repo.root().join(arg)
}

pub fn resolve(args: &RepoArgs, progress: bool) -> anyhow::Result<Resolved> {
    if !args.env_file.is_empty() {
        let loaded = envfile::load(Path::new(&args.env_file), args.env_override)?;
        if progress && !loaded.is_empty() {
            eprintln!(
                "fsm-runner: loaded {} variable(s) from {}",
                loaded.len(),
                args.env_file
            );
        }
    }
    let repo = Repo::open(&args.repo)?;
    let pipeline = match &args.pipeline {
        Some(p) => {
            let path = pipeline_path(p, &repo);
            Some(pipeline::load(&path)?)
        }
        None => None,
    };
    let out_root = match (
        &args.artifacts_dir,
        pipeline
            .as_ref()
            .and_then(|p| p.artifacts_out_dir.as_deref()),
    ) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => repo.root().join(dir),
        (None, None) => repo.root().join(DEFAULT_OUT_DIR),
    };
    let policy = load_policy(args)?;
    if policy.sandbox == SandboxMode::Off {
        eprintln!(
            "warning: the sandbox is OFF: commands run with your full filesystem, network and environment access"
        );
    }
    let private_dir = tempfile::Builder::new().prefix("fsm-runner-").tempdir()?;
    let tmp = private_dir.path().join("home");
    std::fs::create_dir_all(&tmp)?;
    let protected = protected_paths(
        &repo,
        &[
            pipeline.as_ref().map(|p| p.source.as_path()),
            args.policy.as_deref(),
        ],
    );
    let writable = metrics_exception(&repo, pipeline.as_ref(), &protected)?;
    let paths = RunPaths {
        repo: repo.root().to_path_buf(),
        artifacts: out_root.clone(),
        tmp,
        home: std::env::var_os("HOME").map(PathBuf::from),
        path_var: std::env::var("PATH").ok(),
        protected,
        writable,
    };
    let settings = VerifySettings {
        test_cmd: args.test_cmd.clone(),
        unattended: args.unattended,
        runner_env: std::env::vars().collect(),
        policy,
        paths,
        progress,
    };
    Ok(Resolved {
        repo,
        pipeline,
        out_root,
        settings,
        private_dir,
    })
}

/// The declared metrics file stays writable even inside a protected directory
/// (`.aider_fsm/metrics.json`). A bind mount needs the file to exist, so an empty placeholder
/// is created; verification treats a placeholder left empty as a missing file.
fn metrics_exception(
    repo: &Repo,
    pipeline: Option<&Pipeline>,
    protected: &[PathBuf],
) -> anyhow::Result<Vec<PathBuf>> {
    let Some(path) = pipeline
        .and_then(|p| p.benchmark.as_ref())
        .and_then(|b| b.metrics_path.as_deref())
    else {
        return Ok(Vec::new());
    };
    let Ok(rel) = repo.relative(path) else {
        return Ok(Vec::new());
    };
    let host = repo.root().join(&rel);
    if !protected.iter().any(|p| host.starts_with(p)) {
        return Ok(Vec::new());
    }
    if !host.exists() {
        repo.write_file(path, b"", &crate::repo::Protected::default())?;
    }
    Ok(vec![host])
}

#[derive(Serialize)]
struct JsonReport<'a> {
    run_id: &'a str,
    exit_code: u8,
    #[serde(flatten)]
    summary: &'a VerifySummary,
}

pub fn run(args: &VerifyArgs) -> anyhow::Result<u8> {
    let resolved = resolve(&args.repo, !args.json)?;
    if let Some(p) = &resolved.pipeline {
        for warning in &p.warnings {
            eprintln!("warning: {warning}");
        }
    }
    let run_id = artifacts::new_run_id();
    let out = ArtifactDir::create(resolved.out_root.join(&run_id).join("preflight"))?;
    let summary = Verification::new(
        &resolved.repo,
        resolved.pipeline.as_ref(),
        &resolved.settings,
        &out,
    )
    .run()
    .context("verification could not run")?;
    let code = if summary.ok {
        exit::OK
    } else {
        exit::VERIFY_FAILED
    };
    if args.json {
        let report = JsonReport {
            run_id: &run_id,
            exit_code: code,
            summary: &summary,
        };
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_human(&summary);
    }
    Ok(code)
}

fn print_human(summary: &VerifySummary) {
    match (&summary.failed_stage, summary.ok) {
        (_, true) => println!("verify: PASSED"),
        (Some(stage), false) => println!("verify: FAILED at stage `{}`", stage.as_str()),
        (None, false) => println!("verify: FAILED"),
    }
    for stage in &summary.stages {
        let status = if stage.ok { "ok" } else { "FAILED" };
        println!(
            "  {:<16} {:<7} rc={:<4} {:>8.2}s",
            stage.stage.as_str(),
            status,
            stage.rc,
            stage.duration_ms as f64 / 1000.0
        );
        if !stage.ok {
            if let Some(path) = &stage.stderr_path {
                println!("    stderr: {}", path.display());
            }
            if let Some(path) = &stage.stdout_path {
                println!("    stdout: {}", path.display());
            }
        }
    }
    if let Some(path) = &summary.metrics_path {
        let status = if summary.metrics_errors.is_empty() {
            "ok".to_string()
        } else {
            summary.metrics_errors.join("; ")
        };
        println!("  {:<16} {status} ({path})", "metrics");
    }
    println!("artifacts: {}", summary.artifacts_dir.display());
}
