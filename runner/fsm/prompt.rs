//! The words sent to the model: one system message stating the edit protocol and the phase's
//! rules, and one user message holding the snapshot and the task.
//!
//! Owns: the wording and the markers (`PHASE: ...`) that a reader of the logs, or a scripted
//! server, can rely on. Must not: read files or decide anything; callers gather the facts.

use std::fmt::Write;

/// What the model is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    PlanUpdate,
    ExecuteStep,
    Fix,
    MarkDone,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::PlanUpdate => "PLAN_UPDATE",
            Phase::ExecuteStep => "EXECUTE_STEP",
            Phase::Fix => "FIX",
            Phase::MarkDone => "MARK_DONE",
        }
    }

    fn writes_only_plan(self) -> bool {
        matches!(self, Phase::PlanUpdate | Phase::MarkDone)
    }
}

/// The facts of one snapshot (S1).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub goal: Option<String>,
    pub plan_path: String,
    pub plan: String,
    pub pipeline_path: Option<String>,
    pub pipeline: Option<String>,
    pub test_cmd: String,
    pub pending_actions: Option<String>,
    pub iteration: u32,
    pub max_iters: u32,
    /// Where the run stands: the step, its fix attempts, the last verification.
    pub run_state: String,
    /// `M path`-style lines and a diff stat, or a note that there is no git.
    pub git: String,
    /// Top-level names, for orientation.
    pub files: Vec<String>,
    /// `--seed` files: (name, text).
    pub seeds: Vec<(String, String)>,
}

/// A failed verification, as the fix prompt shows it.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    pub stage: String,
    pub tail: String,
    pub artifacts: String,
}

pub fn system(phase: Phase, plan_path: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "You are the model inside fsm-runner, a plan -> execute -> verify loop on a git repository.\n\
         PHASE: {}\n",
        phase.as_str()
    );
    out.push_str(
        "Edit files only with SEARCH/REPLACE blocks. Each block: the file path alone on a line, \
         then a fenced block:\n\
         path/to/file.py\n```\n<<<<<<< SEARCH\nexact lines from the file\n=======\nthe new lines\n>>>>>>> REPLACE\n```\n\
         The SEARCH text must match the file exactly once; include enough lines to be unique. \
         An empty SEARCH creates a new file. A reply is applied all-or-nothing: if any block is \
         refused, nothing is written and you are told why. A reply without blocks changes nothing.\n\n",
    );
    if phase.writes_only_plan() {
        let _ = writeln!(
            out,
            "In this phase you may change only `{plan_path}`. Blocks for any other path are refused."
        );
    } else {
        let _ = writeln!(
            out,
            "In this phase you may change any file in the repository except `{plan_path}`, the \
             pipeline file, the policy file, `.git/` and `.aider_fsm/`. The one exception is \
             `.aider_fsm/actions.yml`: write it (version: 1, actions: run_cmd | install_tool | \
             start_service | write_file) when verification fails for environment reasons such as a \
             missing tool; the runner runs it confined before verifying, then deletes it."
        );
    }
    out.push_str(
        "\nPLAN.md rules: sections `## Next (exactly ONE item)`, `## Backlog`, `## Done`; step \
         lines look like `- [ ] (STEP_ID=NNN) text`; Next holds at most one unchecked step; step \
         ids are unique across all sections.\n",
    );
    out
}

pub fn snapshot(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Snapshot (iteration {} of at most {})\n",
        s.iteration, s.max_iters
    );
    if let Some(goal) = &s.goal {
        let _ = writeln!(out, "## Goal\n{goal}\n");
    }
    let _ = writeln!(out, "## Test command\n`{}`\n", s.test_cmd);
    let _ = writeln!(
        out,
        "## {} (the plan)\n```markdown\n{}\n```\n",
        s.plan_path,
        s.plan.trim_end()
    );
    if let (Some(path), Some(text)) = (&s.pipeline_path, &s.pipeline) {
        let _ = writeln!(
            out,
            "## {path} (human-owned; read-only)\n```yaml\n{}\n```\n",
            text.trim_end()
        );
    }
    if let Some(actions) = &s.pending_actions {
        let _ = writeln!(
            out,
            "## Pending .aider_fsm/actions.yml\n```yaml\n{}\n```\n",
            actions.trim_end()
        );
    }
    let _ = writeln!(out, "## Run state\n{}\n", s.run_state.trim_end());
    let _ = writeln!(out, "## Repository status\n{}\n", s.git.trim_end());
    if !s.files.is_empty() {
        let _ = writeln!(out, "## Top-level files\n{}\n", s.files.join(", "));
    }
    for (name, text) in &s.seeds {
        let _ = writeln!(out, "## Seed: {name}\n{}\n", text.trim_end());
    }
    out
}

pub fn plan_update(snapshot: &str, plan_path: &str, repair: Option<&Failure>) -> String {
    let mut out = format!("{snapshot}\n# Task: update the plan\n");
    match repair {
        Some(failure) => {
            let _ = writeln!(
                out,
                "Verification FAILED at stage `{}` and the plan has no Next step. Add ONE repair \
                 step to the Next section of `{plan_path}` (a new, unique STEP_ID).\n\n{}",
                failure.stage,
                failure_block(failure)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "Bring `{plan_path}` up to date with the goal and the repository. Keep exactly one \
                 unchecked step in Next, the smallest verifiable one; if Next is empty and Backlog \
                 has open steps, move one into Next. When the goal is met and nothing is left, \
                 leave Next empty. Reply with SEARCH/REPLACE blocks for `{plan_path}`, or with no \
                 blocks when the plan is already right."
            );
        }
    }
    out
}

pub fn execute(snapshot: &str, step_id: &str, step_text: &str) -> String {
    format!(
        "{snapshot}\n# Task: carry out exactly this step\n(STEP_ID={step_id}) {step_text}\n\n\
         Make the smallest change that completes the step and lets verification pass. Do not \
         work on other steps. Reply with SEARCH/REPLACE blocks.\n"
    )
}

pub fn fix(
    snapshot: &str,
    step_id: &str,
    step_text: &str,
    attempt: u32,
    max_fix: u32,
    failure: &Failure,
) -> String {
    format!(
        "{snapshot}\n# Task: fix attempt {attempt} of {max_fix} for step (STEP_ID={step_id}) {step_text}\n\
         Verification FAILED at stage `{}` after this step's changes.\n\n{}\n\
         Fix the code with SEARCH/REPLACE blocks. If the failure is the environment's (a missing \
         tool or package), write `.aider_fsm/actions.yml` instead. When the step cannot succeed, \
         the next plan update can split it or mark it blocked.\n",
        failure.stage,
        failure_block(failure)
    )
}

pub fn mark_done(snapshot: &str, plan_path: &str, step_id: &str) -> String {
    format!(
        "{snapshot}\n# Task: mark the step done\nVerification PASSED for (STEP_ID={step_id}). In \
         `{plan_path}`, move that step from Next to Done as `- [x]`, and move ONE open Backlog \
         step (if any) into Next. Reply with SEARCH/REPLACE blocks for `{plan_path}` only.\n"
    )
}

/// Sent after a reply that could not be applied or left the plan invalid.
pub fn refused(reason: &str, attempt: u32, attempts: u32) -> String {
    format!(
        "Your reply was NOT applied (attempt {attempt} of {attempts}); nothing was written.\n\
         Reason: {reason}\n\nReply again with corrected SEARCH/REPLACE blocks. The files are \
         as they were before your reply."
    )
}

fn failure_block(failure: &Failure) -> String {
    format!(
        "Failure output (tail):\n```\n{}\n```\nFull artifacts: {}\n",
        failure.tail.trim_end(),
        failure.artifacts
    )
}
