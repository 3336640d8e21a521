//! `.aider_fsm/state.json`: where a run stands, written atomically after every transition so a
//! run killed at any point resumes where it stopped.
//!
//! Owns: the field names of compat §5 (plus the resume fields of this runner), loading with
//! defaults for missing or unknown fields, and falling back to defaults for a corrupt file.
//! Must not: decide transitions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::artifacts::{ArtifactDir, ArtifactError};

/// Relative to the repo root.
pub const STATE_PATH: &str = ".aider_fsm/state.json";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsmState {
    #[default]
    #[serde(rename = "S0_BOOTSTRAP")]
    Bootstrap,
    #[serde(rename = "S1_SNAPSHOT")]
    Snapshot,
    #[serde(rename = "S2_PLAN_UPDATE")]
    PlanUpdate,
    #[serde(rename = "S3_EXECUTE_STEP")]
    ExecuteStep,
    #[serde(rename = "S4_VERIFY")]
    Verify,
    #[serde(rename = "S5_DECIDE")]
    Decide,
}

impl FsmState {
    pub fn as_str(self) -> &'static str {
        match self {
            FsmState::Bootstrap => "S0_BOOTSTRAP",
            FsmState::Snapshot => "S1_SNAPSHOT",
            FsmState::PlanUpdate => "S2_PLAN_UPDATE",
            FsmState::ExecuteStep => "S3_EXECUTE_STEP",
            FsmState::Verify => "S4_VERIFY",
            FsmState::Decide => "S5_DECIDE",
        }
    }
}

/// The last verification's outcome, kept for the fix prompt and for resuming at S5.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LastVerification {
    pub ok: bool,
    pub failed_stage: Option<String>,
    /// The end of the failing command's output, verifier findings included.
    pub failure_tail: String,
    /// The iteration's artifacts folder.
    pub artifacts: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunState {
    pub version: u32,
    pub repo: String,
    pub plan_path: String,
    pub pipeline_path: Option<String>,
    pub model: String,
    pub test_cmd: String,
    pub iter_idx: u32,
    pub fsm_state: FsmState,
    pub current_step_id: Option<String>,
    pub current_step_text: Option<String>,
    /// Fix attempts per step id.
    pub fix_attempts: BTreeMap<String, u32>,
    pub last_test_rc: Option<i32>,
    pub last_deploy_setup_rc: Option<i32>,
    pub last_deploy_health_rc: Option<i32>,
    pub last_benchmark_rc: Option<i32>,
    pub last_metrics_ok: Option<bool>,
    pub last_exit_reason: Option<String>,
    pub updated_at: String,
    /// The run these fields belong to; a resumed run keeps it, so its artifacts and log
    /// continue in the same places.
    pub run_id: Option<String>,
    /// Set when the run ended (done, max iterations, plan failures); the next `run` starts
    /// a new one instead of resuming.
    pub finished: bool,
    /// Whether the current step's work has been applied and awaits verification (S3 done).
    pub step_applied: bool,
    pub last_verification: Option<LastVerification>,
    /// Verification failed with no Next step: the plan update must add a repair step.
    pub needs_repair: bool,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            version: 1,
            repo: String::new(),
            plan_path: "PLAN.md".into(),
            pipeline_path: None,
            model: String::new(),
            test_cmd: String::new(),
            iter_idx: 0,
            fsm_state: FsmState::Bootstrap,
            current_step_id: None,
            current_step_text: None,
            fix_attempts: BTreeMap::new(),
            last_test_rc: None,
            last_deploy_setup_rc: None,
            last_deploy_health_rc: None,
            last_benchmark_rc: None,
            last_metrics_ok: None,
            last_exit_reason: None,
            updated_at: String::new(),
            run_id: None,
            finished: false,
            step_applied: false,
            last_verification: None,
            needs_repair: false,
        }
    }
}

/// What loading found.
pub enum Loaded {
    Missing,
    Found(Box<RunState>),
    /// The file exists but is not a state object; the reason is logged and defaults apply.
    Corrupt(String),
}

pub fn load(repo_root: &Path) -> Loaded {
    let path = repo_root.join(STATE_PATH);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return Loaded::Corrupt(format!("{}: {e}", path.display())),
    };
    match serde_json::from_str::<RunState>(&text) {
        Ok(state) => Loaded::Found(Box::new(state)),
        Err(e) => Loaded::Corrupt(format!("{}: {e}", path.display())),
    }
}

/// Writes the state atomically (temp file + rename).
pub fn save(repo_root: &Path, state: &mut RunState) -> Result<PathBuf, ArtifactError> {
    state.updated_at = chrono::Utc::now().to_rfc3339();
    let dir = ArtifactDir::create(repo_root.join(".aider_fsm"))?;
    dir.write_json("state.json", state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unknown_fields_merge_with_defaults() {
        let state: RunState = match serde_json::from_str(
            r#"{"iter_idx": 4, "fsm_state": "S4_VERIFY", "something_new": [1]}"#,
        ) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(state.iter_idx, 4);
        assert_eq!(state.fsm_state, FsmState::Verify);
        assert_eq!(state.plan_path, "PLAN.md");
    }

    #[test]
    fn corrupt_file_is_reported_not_fatal() {
        let tmp = match tempfile::tempdir() {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert!(matches!(load(tmp.path()), Loaded::Missing));
        let mut state = RunState {
            iter_idx: 7,
            ..RunState::default()
        };
        if let Err(e) = save(tmp.path(), &mut state) {
            panic!("{e}");
        }
        match load(tmp.path()) {
            Loaded::Found(s) => assert_eq!(s.iter_idx, 7),
            _ => panic!("saved state not found"),
        }
        if let Err(e) = std::fs::write(tmp.path().join(STATE_PATH), "{not json") {
            panic!("{e}");
        }
        assert!(matches!(load(tmp.path()), Loaded::Corrupt(_)));
    }
}
