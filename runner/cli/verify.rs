//! `fsm-runner verify`: resolve the settings, run the pipeline once, print the outcome.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::{RepoArgs, VerifyArgs, exit};
use crate::artifacts::{self, ArtifactDir};
use crate::envfile;
use crate::pipeline::verify::{Verification, VerifySettings, VerifySummary};
use crate::pipeline::{self, Pipeline};
use crate::repo::Repo;
use crate::sandbox::DEFAULT_OUTPUT_CAP;

/// The default artifacts folder, relative to the repo (compat §2).
pub const DEFAULT_OUT_DIR: &str = ".aider_fsm/artifacts";

/// What `verify` resolved from its flags, the pipeline and the environment.
pub struct Resolved {
    pub repo: Repo,
    pub pipeline: Option<Pipeline>,
    pub out_root: PathBuf,
    pub settings: VerifySettings,
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
    let settings = VerifySettings {
        test_cmd: args.test_cmd.clone(),
        unattended: args.unattended,
        output_cap: DEFAULT_OUTPUT_CAP,
        base_env: std::env::vars().collect(),
        progress,
    };
    Ok(Resolved {
        repo,
        pipeline,
        out_root,
        settings,
    })
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
    let summary = Verification {
        repo: &resolved.repo,
        pipeline: resolved.pipeline.as_ref(),
        settings: &resolved.settings,
        out: &out,
    }
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
