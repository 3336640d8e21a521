//! `.aider_fsm/actions.yml` (version 1): the bootstrap steps a model may ask for.
//!
//! Owns: parsing the file (compat §4), running its steps in order (commands through the same
//! stage runner as the pipeline, so the same rules, confinement and artifacts apply; files
//! through the repo capability), and deleting the file afterwards. Must not: trust any path
//! or command in it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::artifacts::ArtifactError;
use crate::pipeline::Stage;
use crate::pipeline::verify::{StageName, StageRun, Verification, VerifyError};
use crate::repo::{Protected, RepoError};
use crate::yaml::{self, ConfigError, Field};

/// Where the model leaves its actions, relative to the repo.
pub const ACTIONS_PATH: &str = ".aider_fsm/actions.yml";

/// The exit code of an action that is malformed or not allowed (compat §4).
pub const BAD_ACTION_RC: i32 = 2;

/// One step as written; validation happens when it runs, so errors become results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Action {
    pub id: String,
    pub kind: String,
    pub cmd: Option<String>,
    pub path: Option<String>,
    pub content: String,
    pub timeout_seconds: Option<f64>,
    pub retries: u32,
    pub risk_level: Option<String>,
    pub rationale: Option<String>,
    /// `kind: plugin`: the plugin, its config and grants.
    pub plugin: Option<crate::pipeline::VerifierSpec>,
}

/// What one action did.
#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    pub id: String,
    pub kind: String,
    pub ok: bool,
    pub rc: i32,
    pub error: Option<String>,
    pub risk_level: Option<String>,
    pub rationale: Option<String>,
}

/// Parses actions text; `file` is used for messages only.
pub fn parse(file: &Path, text: &str) -> Result<Vec<Action>, ConfigError> {
    let root = yaml::parse(file, text)?;
    let top = Field::root(file, &root);
    let mut actions = Vec::new();
    let mut warnings = Vec::new();
    if !matches!(root.value, yaml::Value::Map(_)) {
        return Err(top.error("top level must be a mapping"));
    }
    top.for_each_entry(&mut warnings, |key, field| {
        match key {
            "version" => match field.scalar_text()? {
                None | Some("1") => {}
                Some(v) => return Err(field.error(format!("must be 1, got `{v}`"))),
            },
            "actions" => {
                for (i, node) in field.items()?.iter().enumerate() {
                    actions.push(parse_action(&field.index(i, node), i)?);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(actions)
}

fn parse_action(field: &Field<'_>, index: usize) -> Result<Action, ConfigError> {
    let mut action = Action {
        id: format!("action-{:03}", index + 1),
        ..Action::default()
    };
    let mut ignored = Vec::new();
    field.for_each_entry(&mut ignored, |key, value| {
        match key {
            // Read below by `parse_verifier` when the kind is `plugin`.
            "plugin" | "config" | "grants" => {}
            "id" => {
                if let Some(id) = value.string()?.filter(|s| !s.trim().is_empty()) {
                    action.id = id;
                }
            }
            "kind" => action.kind = value.string()?.unwrap_or_default(),
            "cmd" => action.cmd = value.string()?.filter(|c| !c.trim().is_empty()),
            "path" => action.path = value.string()?.filter(|p| !p.trim().is_empty()),
            "content" => action.content = value.string()?.unwrap_or_default(),
            "timeout_seconds" => action.timeout_seconds = value.non_negative_number()?,
            "retries" => action.retries = value.count()?.unwrap_or(0),
            "risk_level" => action.risk_level = value.string()?,
            "rationale" => action.rationale = value.string()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if action.kind == "plugin" {
        action.plugin = Some(crate::pipeline::parse_verifier(field)?);
    }
    Ok(action)
}

#[derive(Debug, thiserror::Error)]
pub enum ActionsError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// Runs actions in order; the first failing one stops the list.
pub fn run(
    actions: &[Action],
    ctx: &Verification<'_>,
    protected: &Protected,
) -> Result<Vec<ActionResult>, ActionsError> {
    let mut results = Vec::new();
    for action in actions {
        let result = run_one(action, ctx, protected)?;
        let ok = result.ok;
        results.push(result);
        if !ok {
            break;
        }
    }
    ctx.out.write_json("actions_results.json", &results)?;
    Ok(results)
}

fn run_one(
    action: &Action,
    ctx: &Verification<'_>,
    protected: &Protected,
) -> Result<ActionResult, ActionsError> {
    let mut result = ActionResult {
        id: action.id.clone(),
        kind: action.kind.clone(),
        ok: false,
        rc: BAD_ACTION_RC,
        error: None,
        risk_level: action.risk_level.clone(),
        rationale: action.rationale.clone(),
    };
    match action.kind.as_str() {
        "write_file" => {
            let Some(path) = &action.path else {
                result.error = Some("missing_path".into());
                return Ok(result);
            };
            match ctx
                .repo
                .write_file(path, action.content.as_bytes(), protected)
            {
                Ok(_) => {
                    result.ok = true;
                    result.rc = 0;
                }
                Err(RepoError::Protected(_)) => result.error = Some("path_is_protected".into()),
                Err(RepoError::OutsideRepo(_)) => result.error = Some("path_outside_repo".into()),
                Err(e) => result.error = Some(format!("write_failed: {e}")),
            }
        }
        "run_cmd" | "install_tool" | "start_service" => {
            let Some(cmd) = &action.cmd else {
                result.error = Some("missing_cmd".into());
                return Ok(result);
            };
            let config = Stage {
                cmds: vec![cmd.clone()],
                timeout_seconds: action.timeout_seconds,
                retries: action.retries,
                ..Stage::default()
            };
            let run = StageRun {
                name: StageName::Actions,
                label: &action.id,
                cmds: &config.cmds,
                config: &config,
                interactive: false,
                lifetime: crate::sandbox::Lifetime::Command,
            };
            let report = ctx.run_stage(&run)?;
            result.ok = report.ok;
            result.rc = report.rc;
            if let Some(reason) = report.attempts.last().and_then(|a| a.refused.clone()) {
                result.error = Some(reason);
            }
        }
        "plugin" => {
            let Some(spec) = &action.plugin else {
                result.error = Some("missing_plugin".into());
                return Ok(result);
            };
            let verdict = ctx.run_plugin(spec)?;
            ctx.out
                .write_json(&format!("{}_plugin.json", action.id), &verdict)?;
            result.ok = verdict.passed;
            result.rc = if verdict.passed { 0 } else { 1 };
            if !verdict.passed {
                result.error = Some(verdict.summary.clone());
            }
        }
        other => result.error = Some(format!("unsupported_action_kind: {other}")),
    }
    Ok(result)
}

/// Runs the actions file at `path` (if any), records the results, and deletes the file.
/// A file that does not parse is one failed result with exit code 2.
pub fn run_file(
    path: &Path,
    ctx: &Verification<'_>,
    protected: &Protected,
) -> Result<Vec<ActionResult>, ActionsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Ok(vec![parse_failure(format!(
                "{}: cannot read: {e}",
                path.display()
            ))]);
        }
    };
    ctx.out.write_text("actions.yml", &text)?;
    let results = match parse(path, &text) {
        Ok(actions) => run(&actions, ctx, protected)?,
        Err(e) => {
            let results = vec![parse_failure(e.to_string())];
            ctx.out.write_json("actions_results.json", &results)?;
            results
        }
    };
    if let Err(e) = std::fs::remove_file(path) {
        ctx.out.write_text(
            "actions_delete_warning.txt",
            &format!("could not delete {}: {e}\n", path.display()),
        )?;
    }
    Ok(results)
}

fn parse_failure(error: String) -> ActionResult {
    ActionResult {
        id: "actions.yml".into(),
        kind: "parse".into(),
        ok: false,
        rc: BAD_ACTION_RC,
        error: Some(error),
        risk_level: None,
        rationale: None,
    }
}

/// The actions file of a repo as a host path.
pub fn actions_file(repo_root: &Path) -> PathBuf {
    repo_root.join(ACTIONS_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_defaults_and_fields() {
        let text = "version: 1\nactions:\n  - kind: write_file\n    path: .env\n    content: \"A=1\"\n  - id: deps\n    kind: run_cmd\n    cmd: pip install x\n    timeout_seconds: 900\n    retries: 1\n    risk_level: low\n    rationale: why\n";
        let actions = parse(Path::new("actions.yml"), text).unwrap_or_default();
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[0].id, "action-001");
        assert_eq!(actions[0].path.as_deref(), Some(".env"));
        assert_eq!(actions[1].id, "deps");
        assert_eq!(actions[1].timeout_seconds, Some(900.0));
        assert_eq!(actions[1].retries, 1);
        assert_eq!(actions[1].rationale.as_deref(), Some("why"));
    }

    #[test]
    fn bad_files_name_their_field() {
        let e = parse(Path::new("a.yml"), "version: 3\n")
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("a.yml:1:10: version must be 1, got `3`"));
        let e = parse(Path::new("a.yml"), "actions:\n  - 5\n")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("a.yml:2:5: actions[0] must be a mapping")
        );
        let e = parse(Path::new("a.yml"), "actions: [\n")
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("a.yml:")));
    }

    #[test]
    fn example_actions_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/actions.example.yml");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let actions = parse(&path, &text);
        assert!(actions.as_ref().is_ok_and(|a| a.len() >= 2), "{actions:?}");
    }
}
