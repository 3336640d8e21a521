//! `fsm-runner demo` and `fsm-runner scripted-model`: the loop on a bundled repo with a real
//! bug against a bundled scripted server, and that server on its own.
//!
//! The server is labelled as scripted wherever it shows up: its replies are canned text from
//! `examples/demo-bug.model.yml`, not a model's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use super::verify;
use super::{DemoArgs, RepoArgs, ScriptedModelArgs, run};
use crate::fsm::LoopSettings;
use crate::llm::ClientConfig;
use crate::llm::scripted::{Script, ScriptedServer};

/// The demo repository, embedded so the demo works from the binary alone.
const DEMO_FILES: &[(&str, &str)] = &[
    ("stats.py", include_str!("../../examples/demo-bug/stats.py")),
    (
        "test_stats.py",
        include_str!("../../examples/demo-bug/test_stats.py"),
    ),
    (
        "pipeline.yml",
        include_str!("../../examples/demo-bug/pipeline.yml"),
    ),
    (
        "README.md",
        include_str!("../../examples/demo-bug/README.md"),
    ),
];
const DEMO_SCRIPT: &str = include_str!("../../examples/demo-bug.model.yml");
const DEMO_GOAL: &str =
    "Make the test suite pass: median() returns the wrong value for lists of even length";

pub fn run(args: &DemoArgs) -> anyhow::Result<u8> {
    let dir = demo_dir(args.dir.as_deref())?;
    create_demo_repo(&dir)?;
    let script: Script =
        serde_yaml::from_str(DEMO_SCRIPT).context("the bundled demo script does not parse")?;
    let server =
        ScriptedServer::start(script.clone()).context("cannot start the scripted server")?;
    println!("================================================================");
    println!(" {}", script.label);
    println!(
        " served at {}/v1 — no API key, no network, no real model.",
        server.base_url()
    );
    println!(
        " repo: {} (a fresh copy of examples/demo-bug)",
        dir.display()
    );
    println!("================================================================");
    let mut repo_args = RepoArgs::one_off(dir.clone(), args.policy.clone(), args.sandbox);
    repo_args.pipeline = Some(dir.join("pipeline.yml"));
    let resolved = verify::resolve(&repo_args, true)?;
    let settings = LoopSettings {
        goal: Some(DEMO_GOAL.to_string()),
        plan_path: "PLAN.md".into(),
        max_iters: 10,
        max_fix: 3,
        seeds: Vec::new(),
        read_tools: false,
        progress: true,
    };
    let config = ClientConfig {
        api_base: server.base_url(),
        api_key: "scripted-demo".into(),
        model: "scripted-demo".into(),
        request_timeout: Duration::from_secs(30),
        max_retries: 0,
        backoff: Duration::from_millis(100),
    };
    let code = run::drive(&resolved, config, &settings)?;
    println!(
        "\n{} scripted replies served. The plan now reads:\n",
        server.served()
    );
    let plan = std::fs::read_to_string(dir.join("PLAN.md")).unwrap_or_default();
    println!("{}", plan.trim_end());
    println!(
        "\nLook around: `git -C {0} diff` shows the fix; {0}/.aider_fsm/ holds the state, the log and the artifacts.",
        dir.display()
    );
    Ok(code)
}

fn demo_dir(requested: Option<&Path>) -> anyhow::Result<PathBuf> {
    match requested {
        Some(dir) => {
            if dir.exists()
                && std::fs::read_dir(dir)
                    .with_context(|| format!("--dir {}", dir.display()))?
                    .next()
                    .is_some()
            {
                bail!(
                    "--dir {} is not empty; the demo needs a fresh folder",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir).with_context(|| format!("--dir {}", dir.display()))?;
            Ok(dir.to_path_buf())
        }
        None => Ok(tempfile::Builder::new()
            .prefix("fsm-runner-demo-")
            .tempdir()?
            .keep()),
    }
}

/// Writes the demo files and commits them, so `git diff` shows what the loop changed.
fn create_demo_repo(dir: &Path) -> anyhow::Result<()> {
    for (name, text) in DEMO_FILES {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))?;
    }
    std::fs::write(dir.join(".gitignore"), "__pycache__/\n.aider_fsm/\n")?;
    let git = git2::Repository::init(dir).context("git init of the demo repo")?;
    let mut index = git.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = git.find_tree(index.write_tree()?)?;
    let signature = git2::Signature::now("fsm-runner demo", "demo@fsm-runner.invalid")?;
    git.commit(
        Some("HEAD"),
        &signature,
        &signature,
        "Demo repository: median() is wrong for even-length lists",
        &tree,
        &[],
    )?;
    Ok(())
}

pub fn serve_script(args: &ScriptedModelArgs) -> anyhow::Result<u8> {
    let text = std::fs::read_to_string(&args.script)
        .with_context(|| format!("cannot read {}", args.script.display()))?;
    let script: Script = serde_yaml::from_str(&text)
        .with_context(|| format!("{}: not a script (replies: [...])", args.script.display()))?;
    let count = script.replies.len();
    let server = ScriptedServer::start_on(script, args.port)?;
    println!(
        "SCRIPTED model (canned replies from {}, not an AI): OPENAI_API_BASE={}/v1",
        args.script.display(),
        server.base_url()
    );
    eprintln!("serving {count} replies in order; stop with Ctrl-C");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
