//! `fsm-runner policy check | explain`.

use serde_json::json;

use super::{PolicyCommand, exit};
use crate::pipeline;
use crate::policy::{self, Policy};

pub fn run(cmd: &PolicyCommand) -> anyhow::Result<u8> {
    match cmd {
        PolicyCommand::Check { file } => {
            let policy = Policy::load(file)?;
            println!(
                "{}: ok (sandbox: {}, {} stage override(s))",
                file.display(),
                serde_json::to_value(policy.sandbox)?
                    .as_str()
                    .unwrap_or_default(),
                policy.stages.len()
            );
            Ok(exit::OK)
        }
        PolicyCommand::Explain {
            policy,
            pipeline,
            repo,
            json,
        } => {
            let loaded = match policy {
                Some(p) => Policy::load(p)?,
                None => Policy::builtin()?,
            };
            let pipeline = pipeline.as_deref().map(pipeline::load).transpose()?;
            let stages: Vec<_> = policy::STAGES.iter().map(|s| loaded.for_stage(s)).collect();
            let source = policy
                .as_ref()
                .map_or("<built-in policy>".to_string(), |p| p.display().to_string());
            if *json {
                println!(
                    "{}",
                    json!({
                        "policy": source,
                        "repo": repo,
                        "stages": stages,
                        "pipeline_security": pipeline.as_ref().map(|p| json!({
                            "mode": p.security.mode,
                            "allowlist": p.security.allowlist,
                            "denylist": p.security.denylist,
                        })),
                    })
                );
                return Ok(exit::OK);
            }
            println!("policy: {source}");
            if let Some(p) = &pipeline {
                println!(
                    "pipeline command rules ({}): mode {:?}, {} allow / {} deny pattern(s)",
                    p.source.display(),
                    p.security.mode,
                    p.security.allowlist.len(),
                    p.security.denylist.len()
                );
            }
            for grants in &stages {
                println!("\n[{}]", grants.stage);
                print!("{}", serde_yaml::to_string(grants)?);
            }
            Ok(exit::OK)
        }
    }
}
