//! The loop of compat §6: snapshot → plan update → execute one step → verify → decide,
//! persisted after every transition.
//!
//! Owns: the transitions, the bounded retries of each phase (3 plan attempts, 3 edit
//! attempts, `--max-fix` fixes per step), marking steps done or blocked, running a pending
//! actions file, the run log, and resuming from `state.json`. Must not: write to the repo
//! except through `edit::apply` (model replies) and `Repo::write_file` (the runner's own plan
//! changes), or run a command except through `Verification` (the confined path).

pub mod guard;
pub mod prompt;
pub mod state;
pub mod tools;

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::actions::{self, ActionsError};
use crate::artifacts::{self, ArtifactDir, ArtifactError};
use crate::edit::{self, PhaseRule};
use crate::llm::{ChatClient, LlmError, Message};
use crate::pipeline::Pipeline;
use crate::pipeline::verify::{Verification, VerifyError, VerifySettings, VerifySummary};
use crate::plan::{self, Closing, ParsedPlan};
use crate::repo::{Protected, Repo, RepoError};
use guard::{Guard, GuardError, Restored, Scope};
use prompt::{Failure, Phase};
use state::{FsmState, LastVerification, Loaded, RunState};

/// Plan-update attempts per iteration (compat §6).
pub const PLAN_ATTEMPTS: u32 = 3;
/// Attempts at an applicable execute or fix reply.
pub const EDIT_ATTEMPTS: u32 = 3;
/// Attempts at a mark-done reply before the runner marks the step itself.
pub const MARK_DONE_ATTEMPTS: u32 = 2;
/// Rounds of read-only tool calls per model call before a text answer is required.
pub const TOOL_ROUNDS: u32 = 8;
/// Lines of a failing command's output carried into prompts and block notes.
const TAIL_LINES: usize = 40;
const TAIL_CHARS: usize = 4000;
/// The largest plan or seed file put into a prompt.
const PROMPT_FILE_CAP: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("the model could not be reached")]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("verification could not run")]
    Verify(#[from] VerifyError),
    #[error("actions could not run")]
    Actions(#[from] ActionsError),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No Next step and verification passed.
    Done,
    /// `--max-iters` reached.
    MaxIterations,
    /// The plan stayed invalid after every attempt; the reason names the plan errors.
    PlanFailed(String),
}

impl Outcome {
    pub fn reason(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::MaxIterations => "max_iters",
            Outcome::PlanFailed(_) => "plan_update_failed",
        }
    }
}

/// What the loop needs beyond the verification settings.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub goal: Option<String>,
    /// The plan, relative to the repo root.
    pub plan_path: String,
    pub max_iters: u32,
    pub max_fix: u32,
    /// `--seed` files: (name, text), appended to every snapshot.
    pub seeds: Vec<(String, String)>,
    /// Offer the read-only tools (`--read-tools`).
    pub read_tools: bool,
    pub progress: bool,
}

/// Where the run's artifacts go.
pub struct RunDirs {
    /// `<out_dir>`; the run's files go to `<out_dir>/<run_id>/`.
    pub out_root: PathBuf,
}

/// What the S3 phase ended with.
enum Executed {
    Applied,
    /// The plan or the pipeline changed and was restored: start the iteration again.
    Restart,
    /// No reply could be applied: counts as a failed attempt at the step.
    Refused(LastVerification),
}

pub struct Loop<'a> {
    repo: &'a Repo,
    pipeline: Option<&'a Pipeline>,
    verify: &'a VerifySettings,
    client: &'a ChatClient,
    settings: &'a LoopSettings,
    protected: Protected,
    plan_rel: PathBuf,
    /// The artifacts folder relative to the repo, when it lies inside it.
    out_rel: Option<PathBuf>,
    guard: Guard<'a>,
    state: RunState,
    run_dir: ArtifactDir,
    logs: ArtifactDir,
    /// Whether this process picked up a run a previous one left unfinished.
    pub resumed: bool,
}

impl<'a> Loop<'a> {
    /// Opens the run: resumes an unfinished one recorded in `state.json`, else starts anew.
    pub fn open(
        repo: &'a Repo,
        pipeline: Option<&'a Pipeline>,
        verify: &'a VerifySettings,
        client: &'a ChatClient,
        settings: &'a LoopSettings,
        dirs: &RunDirs,
    ) -> Result<Self, LoopError> {
        let plan_rel = repo.relative(&settings.plan_path)?;
        let mut contract: Vec<&Path> = vec![plan_rel.as_path()];
        if let Some(p) = pipeline {
            contract.push(p.source.as_path());
        }
        // The built-in policy's source is not a path in the repo and is filtered out.
        contract.push(verify.policy.source.as_path());
        let protected = Protected::standard(repo, &contract);
        let out_rel = std::fs::canonicalize(&dirs.out_root)
            .unwrap_or_else(|_| dirs.out_root.clone())
            .strip_prefix(repo.root())
            .ok()
            .map(Path::to_path_buf);
        let mut skipped = vec![PathBuf::from(".aider_fsm")];
        skipped.extend(out_rel.clone());
        let guard = Guard::new(repo, &protected.files, &skipped);

        let (state, resumed, corrupt) = match state::load(repo.root()) {
            Loaded::Found(s) if !s.finished && s.run_id.is_some() => (*s, true, None),
            Loaded::Corrupt(reason) => (RunState::default(), false, Some(reason)),
            _ => (RunState::default(), false, None),
        };
        let mut state = if resumed {
            state
        } else {
            RunState {
                run_id: Some(artifacts::new_run_id()),
                ..RunState::default()
            }
        };
        state.repo = repo.root().display().to_string();
        state.plan_path = settings.plan_path.clone();
        state.pipeline_path = pipeline.map(|p| p.source.display().to_string());
        state.model = client.model().to_string();
        state.test_cmd = verify_test_cmd(pipeline, verify);
        let run_id = state.run_id.clone().unwrap_or_else(artifacts::new_run_id);
        let run_dir = ArtifactDir::create(dirs.out_root.join(&run_id))?;
        let logs = ArtifactDir::create(repo.root().join(".aider_fsm/logs"))?;
        let this = Loop {
            repo,
            pipeline,
            verify,
            client,
            settings,
            protected,
            plan_rel,
            out_rel,
            guard,
            state,
            run_dir,
            logs,
            resumed,
        };
        if let Some(reason) = corrupt {
            this.event(
                "state_corrupt",
                json!({ "reason": reason, "action": "defaults" }),
            )?;
        }
        if resumed {
            this.say(&format!(
                "resuming run {run_id} at {} (iteration {})",
                this.state.fsm_state.as_str(),
                this.state.iter_idx
            ));
            this.event("resumed", json!({}))?;
        } else {
            this.event(
                "run_start",
                json!({ "model": client.model(), "url": client.url() }),
            )?;
        }
        Ok(this)
    }

    pub fn run_id(&self) -> &str {
        self.state.run_id.as_deref().unwrap_or_default()
    }

    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    pub fn state(&self) -> &RunState {
        &self.state
    }

    /// Runs transitions until the run ends.
    pub fn run(&mut self) -> Result<Outcome, LoopError> {
        loop {
            match self.state.fsm_state {
                FsmState::Bootstrap => {
                    self.ensure_plan()?;
                    self.go(FsmState::Snapshot)?;
                }
                FsmState::Snapshot => {
                    if self.state.iter_idx >= self.settings.max_iters {
                        return self.finish(Outcome::MaxIterations);
                    }
                    self.state.iter_idx += 1;
                    self.state.step_applied = false;
                    self.say("iteration start");
                    self.go(FsmState::PlanUpdate)?;
                }
                FsmState::PlanUpdate => match self.plan_update()? {
                    Err(reason) => return self.finish(Outcome::PlanFailed(reason)),
                    Ok(parsed) => {
                        let next = parsed.next;
                        self.state.current_step_id = next.as_ref().map(|s| s.id.clone());
                        self.state.current_step_text = next.as_ref().map(|s| s.text.clone());
                        if next.is_some() {
                            self.state.needs_repair = false;
                            self.go(FsmState::ExecuteStep)?;
                        } else {
                            self.go(FsmState::Verify)?;
                        }
                    }
                },
                FsmState::ExecuteStep => match self.execute_step()? {
                    Executed::Applied => {
                        self.state.step_applied = true;
                        self.go(FsmState::Verify)?;
                    }
                    Executed::Restart => self.go(FsmState::Snapshot)?,
                    Executed::Refused(failure) => {
                        self.state.last_verification = Some(failure);
                        self.go(FsmState::Decide)?;
                    }
                },
                FsmState::Verify => {
                    self.verify()?;
                    self.go(FsmState::Decide)?;
                }
                FsmState::Decide => {
                    if let Some(outcome) = self.decide()? {
                        return self.finish(outcome);
                    }
                    self.go(FsmState::Snapshot)?;
                }
            }
        }
    }

    // ---- transitions and records ----

    fn go(&mut self, next: FsmState) -> Result<(), LoopError> {
        self.state.fsm_state = next;
        state::save(self.repo.root(), &mut self.state)?;
        self.event("transition", json!({}))
    }

    fn finish(&mut self, outcome: Outcome) -> Result<Outcome, LoopError> {
        self.state.finished = true;
        self.state.last_exit_reason = Some(outcome.reason().to_string());
        state::save(self.repo.root(), &mut self.state)?;
        let detail = match &outcome {
            Outcome::PlanFailed(reason) => json!({ "reason": outcome.reason(), "detail": reason }),
            _ => json!({ "reason": outcome.reason() }),
        };
        self.event("run_end", detail)?;
        Ok(outcome)
    }

    fn event(&self, name: &str, fields: serde_json::Value) -> Result<(), LoopError> {
        let mut record = json!({
            "ts": chrono::Utc::now().to_rfc3339(),
            "run_id": self.run_id(),
            "iter_idx": self.state.iter_idx,
            "fsm_state": self.state.fsm_state.as_str(),
            "event": name,
        });
        if let (Some(record), serde_json::Value::Object(extra)) = (record.as_object_mut(), fields) {
            record.extend(extra);
        }
        self.logs
            .append_json_line(&format!("run_{}.jsonl", self.run_id()), &record)?;
        Ok(())
    }

    fn say(&self, line: &str) {
        if self.settings.progress {
            eprintln!(
                "fsm-runner: [iter {}] {} {line}",
                self.state.iter_idx,
                self.state.fsm_state.as_str()
            );
        }
    }

    fn iter_dir(&self) -> Result<ArtifactDir, LoopError> {
        Ok(self
            .run_dir
            .subdir(&format!("iter_{:04}", self.state.iter_idx))?)
    }

    // ---- S0 ----

    fn ensure_plan(&mut self) -> Result<(), LoopError> {
        let name = self.plan_rel.to_string_lossy().to_string();
        if self.repo.dir().symlink_metadata(&self.plan_rel).is_ok() {
            return Ok(());
        }
        let test_cmd = verify_test_cmd(self.pipeline, self.verify);
        let text = plan::template(&plan::TemplateInputs {
            goal: self.settings.goal.as_deref(),
            test_cmd: &test_cmd,
            has_deploy: self.pipeline.is_some_and(|p| p.deploy.is_some()),
            has_benchmark: self.pipeline.is_some_and(|p| p.benchmark.is_some()),
            metrics_path: self
                .pipeline
                .and_then(|p| p.benchmark.as_ref())
                .and_then(|b| b.metrics_path.as_deref()),
        });
        self.repo
            .write_file(&name, text.as_bytes(), &Protected::default())?;
        self.say(&format!("created {name} from the template"));
        self.event("plan_created", json!({ "path": name }))
    }

    // ---- S1: the snapshot every prompt starts with ----

    fn snapshot_text(&self) -> String {
        let read = |path: &str| {
            self.repo
                .read_untrusted(path, PROMPT_FILE_CAP)
                .ok()
                .map(|(bytes, _)| String::from_utf8_lossy(&bytes).into_owned())
        };
        let pipeline_rel = self.pipeline.and_then(|p| {
            std::fs::canonicalize(&p.source).ok().and_then(|real| {
                real.strip_prefix(self.repo.root())
                    .ok()
                    .map(Path::to_path_buf)
            })
        });
        let pipeline_text = self
            .pipeline
            .and_then(|p| std::fs::read_to_string(&p.source).ok());
        let mut files: Vec<String> = self
            .repo
            .dir()
            .entries()
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().to_string();
                        if name == ".git" {
                            return None;
                        }
                        let dir = e.file_type().is_ok_and(|t| t.is_dir());
                        Some(if dir { format!("{name}/") } else { name })
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.truncate(200);
        prompt::snapshot(&prompt::Snapshot {
            goal: self.settings.goal.clone(),
            plan_path: self.settings.plan_path.clone(),
            plan: read(&self.settings.plan_path).unwrap_or_default(),
            pipeline_path: self.pipeline.map(|p| {
                pipeline_rel
                    .clone()
                    .unwrap_or_else(|| p.source.clone())
                    .display()
                    .to_string()
            }),
            pipeline: pipeline_text,
            test_cmd: self.state.test_cmd.clone(),
            pending_actions: read(actions::ACTIONS_PATH),
            iteration: self.state.iter_idx,
            max_iters: self.settings.max_iters,
            run_state: self.run_state_text(),
            git: self.guard.status_report(50),
            files,
            seeds: self.settings.seeds.clone(),
        })
    }

    fn run_state_text(&self) -> String {
        let state = &self.state;
        let step = match (&state.current_step_id, &state.current_step_text) {
            (Some(id), Some(text)) => format!("(STEP_ID={id}) {text}"),
            _ => "none".into(),
        };
        let fixes = state
            .current_step_id
            .as_ref()
            .and_then(|id| state.fix_attempts.get(id))
            .copied()
            .unwrap_or(0);
        let last = match &state.last_verification {
            None => "not run yet in this run".to_string(),
            Some(v) if v.ok => "passed".to_string(),
            Some(v) => format!("FAILED at `{}`", v.failed_stage.as_deref().unwrap_or("?")),
        };
        format!(
            "current step: {step}\nfix attempts for it: {fixes} of at most {}\nlast verification: {last}",
            self.settings.max_fix
        )
    }

    // ---- the model ----

    /// One call, recorded in the iteration's `model/` folder and in the run log.
    fn ask(&self, phase: Phase, messages: &[Message], attempt: u32) -> Result<String, LoopError> {
        let dir = self.iter_dir()?.subdir("model")?;
        // Numbered by requests, so a call repeated after a resume gets its own files.
        let seq = std::fs::read_dir(dir.path()).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with("_request.json"))
                .count()
        }) + 1;
        let stem = format!("{seq:02}_{}_try{attempt}", phase.as_str().to_lowercase());
        dir.write_json(&format!("{stem}_request.json"), &messages)?;
        let answer = if self.settings.read_tools {
            let tools = tools::RepoTools { repo: self.repo };
            self.client.chat_with_tools(messages, &tools, TOOL_ROUNDS)
        } else {
            self.client.chat(messages)
        };
        let reply = match answer {
            Ok(reply) => reply,
            Err(e) => {
                self.event(
                    "model_error",
                    json!({ "phase": phase.as_str(), "attempt": attempt, "error": e.to_string() }),
                )?;
                return Err(e.into());
            }
        };
        dir.write_text(&format!("{stem}_reply.txt"), &reply.content)?;
        self.say(&format!(
            "{} reply in {:.2}s ({} tokens)",
            phase.as_str(),
            reply.latency_ms as f64 / 1000.0,
            reply.usage.total_tokens
        ));
        self.event(
            "model_call",
            json!({
                "phase": phase.as_str(),
                "attempt": attempt,
                "model": self.client.model(),
                "prompt_tokens": reply.usage.prompt_tokens,
                "completion_tokens": reply.usage.completion_tokens,
                "total_tokens": reply.usage.total_tokens,
                "latency_ms": reply.latency_ms,
                "http_attempts": reply.attempts,
                "tool_rounds": reply.tool_rounds,
            }),
        )?;
        Ok(reply.content)
    }

    fn edit_event(
        &self,
        phase: Phase,
        attempt: u32,
        result: Result<&[PathBuf], &str>,
    ) -> Result<(), LoopError> {
        let fields = match result {
            Ok(files) => {
                json!({ "phase": phase.as_str(), "attempt": attempt, "applied": true, "files": files })
            }
            Err(reason) => {
                json!({ "phase": phase.as_str(), "attempt": attempt, "applied": false, "reason": reason })
            }
        };
        self.event("edit", fields)
    }

    /// Parses and applies a reply under a rule; `Err` holds the reason for the model.
    fn apply_reply(&self, reply: &str, rule: &PhaseRule<'_>) -> Result<Vec<PathBuf>, String> {
        let blocks = edit::parse_blocks(reply).map_err(|e| e.to_string())?;
        edit::apply(self.repo, &blocks, rule).map_err(|e| e.to_string())
    }

    fn read_plan(&self) -> Result<String, LoopError> {
        let (bytes, _) = self
            .repo
            .read_untrusted(&self.settings.plan_path, PROMPT_FILE_CAP)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn write_plan(&self, text: &str) -> Result<(), LoopError> {
        self.repo.write_file(
            &self.settings.plan_path,
            text.as_bytes(),
            &Protected::default(),
        )?;
        Ok(())
    }

    /// Is `rel` the runner's own (state, logs, artifacts), which no phase rule applies to?
    fn runner_owned(&self, rel: &Path) -> bool {
        (rel.starts_with(".aider_fsm") && rel != Path::new(actions::ACTIONS_PATH))
            || self.out_rel.as_ref().is_some_and(|o| rel.starts_with(o))
    }

    fn log_restored(&self, phase: &str, restored: &[Restored]) -> Result<(), LoopError> {
        if restored.is_empty() {
            return Ok(());
        }
        for r in restored {
            self.say(&format!(
                "backstop: {} {} (changed outside the {phase} phase's rules)",
                r.action,
                r.path.display()
            ));
        }
        self.event(
            "backstop_restored",
            json!({ "phase": phase, "paths": restored }),
        )
    }

    // ---- S2 ----

    fn plan_update(&mut self) -> Result<Result<ParsedPlan, String>, LoopError> {
        let repair = if self.state.needs_repair {
            self.state.last_verification.as_ref().map(failure_of)
        } else {
            None
        };
        let user = prompt::plan_update(
            &self.snapshot_text(),
            &self.settings.plan_path,
            repair.as_ref(),
        );
        let mut messages = vec![
            Message::system(prompt::system(Phase::PlanUpdate, &self.settings.plan_path)),
            Message::user(user),
        ];
        let rule = PhaseRule::OnlyPlan(self.plan_rel.clone());
        let mut last_reason = String::new();
        for attempt in 1..=PLAN_ATTEMPTS {
            let before_plan = self.read_plan()?;
            let snapshot = self.guard.snapshot(Scope::WorkTree)?;
            let reply = self.ask(Phase::PlanUpdate, &messages, attempt)?;
            let verdict = match self.apply_reply(&reply, &rule) {
                Err(reason) => Err(reason),
                Ok(files) => {
                    self.edit_event(Phase::PlanUpdate, attempt, Ok(&files))?;
                    let parsed = plan::parse(&self.read_plan()?);
                    self.plan_problem(&parsed).map_or(Ok(parsed), Err)
                }
            };
            let plan_rel = self.plan_rel.clone();
            let restored = self
                .guard
                .restore_outside(&snapshot, &|rel| rel == plan_rel || self.runner_owned(rel))?;
            self.log_restored("plan", &restored)?;
            match verdict {
                Ok(parsed) => {
                    self.event(
                        "plan_ok",
                        json!({ "next": parsed.next, "backlog_open": parsed.backlog_open_count() }),
                    )?;
                    return Ok(Ok(parsed));
                }
                Err(reason) => {
                    // The model retries against the plan as it was.
                    self.write_plan(&before_plan)?;
                    self.edit_event(Phase::PlanUpdate, attempt, Err(&reason))?;
                    self.say(&format!("plan reply refused: {reason}"));
                    messages.push(Message::assistant(reply));
                    messages.push(Message::user(prompt::refused(
                        &reason,
                        attempt,
                        PLAN_ATTEMPTS,
                    )));
                    last_reason = reason;
                }
            }
        }
        Ok(Err(format!(
            "the plan update failed {PLAN_ATTEMPTS} times; last reason: {last_reason}"
        )))
    }

    /// Why a plan cannot be used, in words for the model.
    fn plan_problem(&self, parsed: &ParsedPlan) -> Option<String> {
        let path = &self.settings.plan_path;
        if !parsed.is_valid() {
            return Some(format!("{path} has errors: {}", parsed.errors.join(", ")));
        }
        if parsed.next.is_none() && parsed.backlog_open_count() > 0 {
            return Some(format!(
                "{path} has no Next step but {} open Backlog step(s): move one into Next",
                parsed.backlog_open_count()
            ));
        }
        if parsed.next.is_none() && self.state.needs_repair {
            return Some(format!(
                "verification failed and {path} has no Next step: add one repair step to Next"
            ));
        }
        None
    }

    // ---- S3 ----

    fn execute_step(&mut self) -> Result<Executed, LoopError> {
        let (Some(step_id), Some(step_text)) = (
            self.state.current_step_id.clone(),
            self.state.current_step_text.clone(),
        ) else {
            return Ok(Executed::Applied);
        };
        let fixes = self.state.fix_attempts.get(&step_id).copied().unwrap_or(0);
        let failed = self.state.last_verification.as_ref().filter(|v| !v.ok);
        let (phase, user) = match failed {
            Some(failure) if fixes > 0 => (
                Phase::Fix,
                prompt::fix(
                    &self.snapshot_text(),
                    &step_id,
                    &step_text,
                    fixes,
                    self.settings.max_fix,
                    &failure_of(failure),
                ),
            ),
            _ => (
                Phase::ExecuteStep,
                prompt::execute(&self.snapshot_text(), &step_id, &step_text),
            ),
        };
        let mut messages = vec![
            Message::system(prompt::system(phase, &self.settings.plan_path)),
            Message::user(user),
        ];
        let snapshot = self.guard.snapshot(Scope::Protected)?;
        let protected = self.protected.clone();
        let rule = PhaseRule::AllExcept(&protected);
        let mut reasons = Vec::new();
        let mut applied = false;
        for attempt in 1..=EDIT_ATTEMPTS {
            let reply = self.ask(phase, &messages, attempt)?;
            match self.apply_reply(&reply, &rule) {
                Ok(files) => {
                    self.say(&format!("applied edits to {} file(s)", files.len()));
                    self.edit_event(phase, attempt, Ok(&files))?;
                    applied = true;
                    break;
                }
                Err(reason) => {
                    self.say(&format!("{} reply refused: {reason}", phase.as_str()));
                    self.edit_event(phase, attempt, Err(&reason))?;
                    messages.push(Message::assistant(reply));
                    messages.push(Message::user(prompt::refused(
                        &reason,
                        attempt,
                        EDIT_ATTEMPTS,
                    )));
                    reasons.push(reason);
                }
            }
        }
        if applied {
            self.run_pending_actions()?;
        }
        let restored = self.guard.restore_outside(&snapshot, &|rel| {
            !protected.covers(rel) || self.runner_owned(rel)
        })?;
        self.log_restored("execute", &restored)?;
        if restored.iter().any(|r| protected.files.contains(&r.path)) {
            self.say("the plan or the pipeline changed during the step: restored; the iteration restarts");
            return Ok(Executed::Restart);
        }
        if applied {
            return Ok(Executed::Applied);
        }
        Ok(Executed::Refused(LastVerification {
            ok: false,
            failed_stage: Some("edit".into()),
            failure_tail: format!(
                "no reply could be applied in {EDIT_ATTEMPTS} attempts:\n{}",
                reasons.join("\n")
            ),
            artifacts: Some(self.iter_dir()?.path().join("model")),
        }))
    }

    /// Runs `.aider_fsm/actions.yml` when the model wrote one, confined like pipeline commands.
    fn run_pending_actions(&self) -> Result<(), LoopError> {
        let path = actions::actions_file(self.repo.root());
        if !path.exists() {
            return Ok(());
        }
        let out = self.iter_dir()?.subdir("actions")?;
        let ctx = Verification::new(self.repo, self.pipeline, self.verify, &out);
        self.say("running the model's .aider_fsm/actions.yml (confined)");
        let results = actions::run_file(&path, &ctx, &self.protected)?;
        self.event("actions", json!({ "results": results }))
    }

    // ---- S4 ----

    fn verify(&mut self) -> Result<(), LoopError> {
        let out = self.iter_dir()?;
        let snapshot = self.guard.snapshot(Scope::Protected)?;
        let summary = Verification::new(self.repo, self.pipeline, self.verify, &out).run()?;
        let protected = self.protected.clone();
        let restored = self.guard.restore_outside(&snapshot, &|rel| {
            !protected.covers(rel) || self.runner_owned(rel)
        })?;
        self.log_restored("verify", &restored)?;
        self.state.last_test_rc = summary.tests_rc;
        self.state.last_deploy_setup_rc = summary.deploy_setup_rc;
        self.state.last_deploy_health_rc = summary.deploy_health_rc;
        self.state.last_benchmark_rc = summary.benchmark_rc;
        self.state.last_metrics_ok = summary.metrics_ok;
        let failed_stage = summary.failed_stage.map(|s| s.as_str().to_string());
        self.say(&match &failed_stage {
            None => "verification PASSED".to_string(),
            Some(stage) => format!("verification FAILED at `{stage}`"),
        });
        self.state.last_verification = Some(LastVerification {
            ok: summary.ok,
            failure_tail: if summary.ok {
                String::new()
            } else {
                failure_tail(&summary)
            },
            failed_stage,
            artifacts: Some(out.path().to_path_buf()),
        });
        self.event(
            "verify",
            json!({
                "ok": summary.ok,
                "failed_stage": summary.failed_stage.map(|s| s.as_str()),
                "tests_rc": summary.tests_rc,
                "artifacts": out.path(),
            }),
        )
    }

    // ---- S5 ----

    fn decide(&mut self) -> Result<Option<Outcome>, LoopError> {
        let verification = self.state.last_verification.clone().unwrap_or_default();
        let Some(step_id) = self.state.current_step_id.clone() else {
            if verification.ok {
                return Ok(Some(Outcome::Done));
            }
            self.state.needs_repair = true;
            self.event("repair_needed", json!({}))?;
            return Ok(None);
        };
        if verification.ok {
            self.mark_done(&step_id)?;
            self.state.fix_attempts.remove(&step_id);
            return Ok(None);
        }
        let fixes = self.state.fix_attempts.get(&step_id).copied().unwrap_or(0);
        if fixes >= self.settings.max_fix {
            self.block_step(&step_id, fixes, &verification)?;
            self.state.fix_attempts.remove(&step_id);
            self.state.last_verification = None;
        } else {
            self.state.fix_attempts.insert(step_id.clone(), fixes + 1);
            self.event(
                "fix_scheduled",
                json!({ "step": step_id, "fix_attempt": fixes + 1 }),
            )?;
        }
        Ok(None)
    }

    fn step_in_next(&self, step_id: &str) -> Result<bool, LoopError> {
        Ok(plan::parse(&self.read_plan()?)
            .next
            .is_some_and(|s| s.id == step_id))
    }

    fn mark_done(&mut self, step_id: &str) -> Result<(), LoopError> {
        if !self.step_in_next(step_id)? {
            // Already closed (a resumed run that stopped after this).
            return Ok(());
        }
        let mut messages = vec![
            Message::system(prompt::system(Phase::MarkDone, &self.settings.plan_path)),
            Message::user(prompt::mark_done(
                &self.snapshot_text(),
                &self.settings.plan_path,
                step_id,
            )),
        ];
        let rule = PhaseRule::OnlyPlan(self.plan_rel.clone());
        for attempt in 1..=MARK_DONE_ATTEMPTS {
            let before = self.read_plan()?;
            let reply = self.ask(Phase::MarkDone, &messages, attempt)?;
            let verdict = self.apply_reply(&reply, &rule).and_then(|_| {
                let parsed = plan::parse(&self.read_plan().map_err(|e| e.to_string())?);
                let closed = parsed.done.iter().any(|s| s.id == step_id && s.checked)
                    && parsed.next.as_ref().is_none_or(|s| s.id != step_id);
                match (parsed.is_valid(), closed) {
                    (false, _) => Err(format!("the plan has errors: {}", parsed.errors.join(", "))),
                    (true, false) => Err(format!(
                        "(STEP_ID={step_id}) must leave Next and appear in Done as `- [x]`"
                    )),
                    (true, true) => Ok(()),
                }
            });
            match verdict {
                Ok(()) => {
                    self.say(&format!("step {step_id} marked done"));
                    return self.event("step_done", json!({ "step": step_id, "by": "model" }));
                }
                Err(reason) => {
                    self.write_plan(&before)?;
                    self.edit_event(Phase::MarkDone, attempt, Err(&reason))?;
                    messages.push(Message::assistant(reply));
                    messages.push(Message::user(prompt::refused(
                        &reason,
                        attempt,
                        MARK_DONE_ATTEMPTS,
                    )));
                }
            }
        }
        let text = self.read_plan()?;
        if let Some(closed) = plan::close_step(&text, step_id, Closing::Done) {
            self.write_plan(&closed)?;
        }
        self.say(&format!("step {step_id} marked done by the runner"));
        self.event("step_done", json!({ "step": step_id, "by": "runner" }))
    }

    fn block_step(
        &mut self,
        step_id: &str,
        fixes: u32,
        failure: &LastVerification,
    ) -> Result<(), LoopError> {
        let tail: Vec<&str> = failure.failure_tail.lines().collect();
        let tail = tail[tail.len().saturating_sub(10)..].join("\n");
        let reason = format!(
            "{fixes} fix attempt(s) failed at stage `{}`:\n{tail}",
            failure.failed_stage.as_deref().unwrap_or("?")
        );
        let text = self.read_plan()?;
        if let Some(blocked) =
            plan::close_step(&text, step_id, Closing::Blocked { reason: &reason })
        {
            self.write_plan(&blocked)?;
        }
        self.say(&format!(
            "step {step_id} BLOCKED after {fixes} fix attempt(s)"
        ));
        self.event(
            "step_blocked",
            json!({ "step": step_id, "fix_attempts": fixes, "reason": reason }),
        )
    }
}

/// The tests command verification runs, for state.json and the plan template.
fn verify_test_cmd(pipeline: Option<&Pipeline>, verify: &VerifySettings) -> String {
    match pipeline {
        Some(p) => p
            .effective_test_cmds(verify.test_cmd.as_deref())
            .join(" && "),
        None => verify
            .test_cmd
            .clone()
            .unwrap_or_else(|| crate::pipeline::DEFAULT_TEST_CMD.to_string()),
    }
}

fn failure_of(v: &LastVerification) -> Failure {
    Failure {
        stage: v.failed_stage.clone().unwrap_or_else(|| "?".into()),
        tail: v.failure_tail.clone(),
        artifacts: v
            .artifacts
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    }
}

/// The end of the failing stage's output, metrics errors and verifier findings.
fn failure_tail(summary: &VerifySummary) -> String {
    let mut out = String::new();
    if let Some(stage) = summary.stages.iter().find(|s| !s.ok) {
        if let Some(attempt) = stage.attempts.last() {
            out.push_str(&format!("$ {}\nexit code {}", attempt.cmd, attempt.rc));
            if attempt.timed_out {
                out.push_str(" (timed out)");
            }
            if let Some(refused) = &attempt.refused {
                out.push_str(&format!(" (refused: {refused})"));
            }
            out.push('\n');
        }
        for (label, path) in [
            ("stdout", &stage.stdout_path),
            ("stderr", &stage.stderr_path),
        ] {
            let Some(text) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) else {
                continue;
            };
            let tail = tail_of(&text);
            if !tail.trim().is_empty() {
                out.push_str(&format!("--- {label} (end) ---\n{tail}\n"));
            }
        }
    }
    for error in &summary.metrics_errors {
        out.push_str(&format!("metrics: {error}\n"));
    }
    for verdict in summary.verifiers.iter().filter(|v| !v.passed) {
        out.push_str(&format!(
            "verifier {}: {}\n",
            verdict.plugin, verdict.summary
        ));
        if let Some(error) = &verdict.error {
            out.push_str(&format!("  error: {error}\n"));
        }
        for f in &verdict.findings {
            let place = match (&f.path, f.line) {
                (Some(p), Some(l)) => format!(" {p}:{l}"),
                (Some(p), None) => format!(" {p}"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  [{}] {}{place}: {}\n",
                f.severity, f.rule, f.message
            ));
        }
    }
    out
}

fn tail_of(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    if tail.len() > TAIL_CHARS {
        let mut cut = tail.len() - TAIL_CHARS;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = format!("…{}", &tail[cut..]);
    }
    tail
}
