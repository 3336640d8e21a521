//! `fsm-runner sandbox exec`: one command under one stage's grants.

use std::io::Write;

use super::verify::resolve;
use super::{RepoArgs, SandboxExecArgs, exit};
use crate::artifacts::ArtifactDir;
use crate::pipeline::Stage;
use crate::pipeline::verify::Verification;
use crate::{policy, sandbox};

pub fn exec(args: &SandboxExecArgs) -> anyhow::Result<u8> {
    if !policy::STAGES.contains(&args.stage.as_str()) {
        anyhow::bail!(
            "`{}` is not a stage; stages are {}",
            args.stage,
            policy::STAGES.join(", ")
        );
    }
    let repo_args = RepoArgs::one_off(args.repo.clone(), args.policy.clone(), args.sandbox);
    let resolved = resolve(&repo_args, false)?;
    let out = ArtifactDir::create(resolved.private_dir.path().join("artifacts"))?;
    let ctx = Verification::new(&resolved.repo, None, &resolved.settings, &out);
    let config = Stage {
        timeout_seconds: args.timeout,
        ..Stage::default()
    };
    let spec = ctx.argv_spec(&args.stage, &args.command, &config)?;
    let needs_proxy = !ctx.proxies.borrow().is_empty();
    let rc = if needs_proxy {
        // The proxy runs on threads in this process; namespaces need a single-threaded
        // caller, so the command goes through a re-executed helper as in `verify`.
        let (outcome, _) = sandbox::run(&spec, sandbox::DEFAULT_OUTPUT_CAP)?;
        std::io::stdout().write_all(outcome.stdout.to_text().as_bytes())?;
        std::io::stderr().write_all(outcome.stderr.to_text().as_bytes())?;
        outcome.rc
    } else {
        // Nothing else runs here: this process is the helper, and the command's output goes
        // straight to the terminal.
        let (rc, error) = sandbox::helper::run_here(&spec);
        if let Some(error) = error {
            eprintln!("fsm-runner: {error}");
        }
        rc
    };
    Ok(u8::try_from(rc).unwrap_or(exit::BAD_INPUT))
}
