//! `fsm-runner actions run`: run an actions file once, as the loop would.

use serde_json::json;

use super::verify::resolve;
use super::{ActionsRunArgs, exit};
use crate::actions;
use crate::artifacts::{self, ArtifactDir};
use crate::pipeline::verify::Verification;
use crate::repo::Protected;

pub fn run(args: &ActionsRunArgs) -> anyhow::Result<u8> {
    let resolved = resolve(&args.repo, !args.json)?;
    let file = match &args.file {
        Some(f) => f.clone(),
        None => actions::actions_file(resolved.repo.root()),
    };
    if !file.exists() {
        anyhow::bail!("no actions file at `{}`", file.display());
    }
    let run_id = artifacts::new_run_id();
    let out = ArtifactDir::create(resolved.out_root.join(&run_id).join("actions"))?;
    let mut contract: Vec<&std::path::Path> = vec![args.plan_path.as_path()];
    if let Some(p) = &resolved.pipeline {
        contract.push(p.source.as_path());
    }
    let protected = Protected::standard(&resolved.repo, &contract);
    let ctx = Verification::new(
        &resolved.repo,
        resolved.pipeline.as_ref(),
        &resolved.settings,
        &out,
    );
    let results = if args.keep {
        let text = std::fs::read_to_string(&file)?;
        let parsed = actions::parse(&file, &text)?;
        actions::run(&parsed, &ctx, &protected)?
    } else {
        actions::run_file(&file, &ctx, &protected)?
    };
    let ok = results.iter().all(|r| r.ok);
    if args.json {
        println!(
            "{}",
            json!({"ok": ok, "run_id": run_id, "artifacts_dir": out.path(), "results": results})
        );
    } else {
        for r in &results {
            let status = if r.ok {
                "ok".to_string()
            } else {
                format!("FAILED rc={}", r.rc)
            };
            let error = r
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            println!("  {:<20} {:<14} {status}{error}", r.id, r.kind);
        }
        println!("artifacts: {}", out.path().display());
    }
    Ok(if ok { exit::OK } else { exit::VERIFY_FAILED })
}
