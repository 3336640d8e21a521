//! `fsm-runner plugin list | info | run`.

use serde_json::json;

use super::verify::resolve;
use super::{PluginCommand, PluginRunArgs, RepoArgs, exit};
use crate::artifacts::ArtifactDir;
use crate::pipeline::VerifierSpec;
use crate::pipeline::verify::Verification;
use crate::sandbox::wasm::{self, PluginHost};

pub fn run(cmd: &PluginCommand) -> anyhow::Result<u8> {
    match cmd {
        PluginCommand::List => {
            let host = PluginHost::new(wasm::default_cache_dir())?;
            for name in wasm::builtin_names() {
                let info = host.info(name)?;
                println!(
                    "{:<20} {:<8} api {}",
                    info.name, info.version, info.api_version
                );
            }
            Ok(exit::OK)
        }
        PluginCommand::Info { plugin } => {
            let info = PluginHost::new(wasm::default_cache_dir())?.info(plugin)?;
            println!(
                "{}",
                json!({"name": info.name, "version": info.version, "api_version": info.api_version})
            );
            Ok(exit::OK)
        }
        PluginCommand::Run(args) => run_once(args),
    }
}

fn config_json(text: &str) -> anyhow::Result<serde_json::Value> {
    let text = match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file `{path}`: {e}"))?,
        None => text.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--config is not valid JSON: {e}"))
}

fn run_once(args: &PluginRunArgs) -> anyhow::Result<u8> {
    let config = config_json(&args.config)?;
    let repo_args = RepoArgs::one_off(args.repo.clone(), args.policy.clone(), None);
    let resolved = resolve(&repo_args, false)?;
    let out = ArtifactDir::create(resolved.private_dir.path().join("artifacts"))?;
    let ctx = Verification::new(&resolved.repo, None, &resolved.settings, &out);
    let spec = VerifierSpec {
        plugin: args.plugin.clone(),
        config,
        grants: None,
    };
    // A plugin that cannot be found or loaded is bad input, not a failed verification.
    ctx.plugin_host()?.check(&args.plugin)?;
    let started = std::time::Instant::now();
    let mut verdict = ctx.run_plugin(&spec)?;
    for _ in 1..args.repeat.max(1) {
        verdict = ctx.run_plugin(&spec)?;
    }
    let mean_call_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(args.repeat.max(1));
    if args.json {
        let mut value = serde_json::to_value(&verdict)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("calls".into(), json!(args.repeat.max(1)));
            obj.insert("mean_call_us".into(), json!(mean_call_us));
        }
        println!("{value}");
    } else {
        if args.repeat > 1 {
            println!("{} calls, {mean_call_us:.1} µs per call", args.repeat);
        }
        println!(
            "{}: {}",
            if verdict.passed { "PASSED" } else { "FAILED" },
            verdict.summary
        );
        for f in &verdict.findings {
            let place = f
                .path
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            println!("  [{}] {}: {}{place}", f.severity, f.rule, f.message);
        }
        if !verdict.stderr.is_empty() {
            println!("plugin stderr:\n{}", verdict.stderr.trim_end());
        }
    }
    Ok(if verdict.passed {
        exit::OK
    } else {
        exit::VERIFY_FAILED
    })
}
