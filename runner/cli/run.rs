//! `fsm-runner run`: resolve the repo (cloning a URL or `owner/name`), the settings and the
//! model endpoint, then hand over to the loop and print how it ended.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use super::verify::{self, Resolved};
use super::{ModelArgs, RunArgs, VerifyArgs, exit};
use crate::fsm::{Loop, LoopSettings, Outcome, RunDirs};
use crate::llm::{ChatClient, ClientConfig, DEFAULT_API_BASE};
use crate::repo;

/// The largest `--seed` file.
const SEED_CAP: u64 = 256 * 1024;

pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let clone_dir = args
        .clone_dir
        .clone()
        .unwrap_or_else(repo::default_clone_dir);
    let spec = args.repo.repo.to_string_lossy().to_string();
    let (path, cloned) = repo::locate(&spec, &clone_dir)?;
    if cloned {
        eprintln!("fsm-runner: cloned {spec} into {}", path.display());
    }
    let mut repo_args = args.repo.clone();
    repo_args.repo = path;
    if args.preflight_only {
        return verify::run(&VerifyArgs {
            repo: repo_args,
            json: args.json,
        });
    }
    // The .env file may hold the key, so the settings (which load it) come first.
    let resolved = verify::resolve(&repo_args, true)?;
    let api_key = std::env::var("OPENAI_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            anyhow!(
                "OPENAI_API_KEY is not set: the loop needs an OpenAI-compatible model\n  \
                 hint: export OPENAI_API_KEY (and OPENAI_API_BASE for another endpoint), or try \
                 `fsm-runner demo` (a scripted model, no key needed) or `--preflight-only`"
            )
        })?;
    let api_base = std::env::var("OPENAI_API_BASE")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_API_BASE.to_string());
    let settings = LoopSettings {
        goal: args.goal.clone(),
        plan_path: args.plan_path.clone(),
        max_iters: args.max_iters,
        max_fix: args.max_fix,
        seeds: read_seeds(&args.seeds)?,
        read_tools: args.read_tools,
        progress: true,
    };
    drive(
        &resolved,
        client_config(&args.model, api_base, api_key)?,
        &settings,
    )
}

pub fn client_config(
    model: &ModelArgs,
    api_base: String,
    api_key: String,
) -> anyhow::Result<ClientConfig> {
    if !(model.request_timeout.is_finite() && model.request_timeout > 0.0) {
        bail!(
            "--request-timeout must be a positive number of seconds, not {}",
            model.request_timeout
        );
    }
    Ok(ClientConfig {
        api_base,
        api_key,
        model: model.model.clone(),
        request_timeout: Duration::from_secs_f64(model.request_timeout),
        max_retries: model.max_retries,
        backoff: Duration::from_millis(model.retry_backoff_ms),
    })
}

fn read_seeds(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    paths
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("--seed {}: cannot read", path.display()))?;
            if !meta.is_file() || meta.len() > SEED_CAP {
                bail!(
                    "--seed {}: must be a regular file of at most {SEED_CAP} bytes",
                    path.display()
                );
            }
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--seed {}: cannot read as UTF-8 text", path.display()))?;
            Ok((path.display().to_string(), text))
        })
        .collect()
}

/// Runs the loop to its end and prints the outcome; shared by `run` and `demo`.
pub fn drive(
    resolved: &Resolved,
    config: ClientConfig,
    settings: &LoopSettings,
) -> anyhow::Result<u8> {
    if let Some(p) = &resolved.pipeline {
        for warning in &p.warnings {
            eprintln!("warning: {warning}");
        }
    }
    let client = ChatClient::new(config)?;
    let dirs = RunDirs {
        out_root: resolved.out_root.clone(),
    };
    let mut fsm = Loop::open(
        &resolved.repo,
        resolved.pipeline.as_ref(),
        &resolved.settings,
        &client,
        settings,
        &dirs,
    )?;
    let outcome = fsm.run().map_err(|e| {
        anyhow!(e).context(format!(
            "run {} stopped at {} (iteration {}); its state is saved: `fsm-runner run` with the same --repo resumes it",
            fsm.run_id(),
            fsm.state().fsm_state.as_str(),
            fsm.state().iter_idx
        ))
    })?;
    let iterations = fsm.state().iter_idx;
    let (line, code) = match &outcome {
        Outcome::Done => (format!("DONE after {iterations} iteration(s)"), exit::OK),
        Outcome::MaxIterations => (
            format!("STOPPED: --max-iters {} reached", settings.max_iters),
            exit::MAX_ITERS,
        ),
        Outcome::PlanFailed(reason) => (format!("FAILED: {reason}"), exit::BAD_INPUT),
    };
    println!("run {}: {line}", fsm.run_id());
    println!(
        "  plan:      {}",
        resolved.repo.root().join(&settings.plan_path).display()
    );
    println!("  artifacts: {}", fsm.run_dir().display());
    println!(
        "  log:       {}",
        resolved
            .repo
            .root()
            .join(format!(".aider_fsm/logs/run_{}.jsonl", fsm.run_id()))
            .display()
    );
    Ok(code)
}
