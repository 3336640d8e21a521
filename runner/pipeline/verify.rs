//! Running a pipeline: auth → tests → deploy setup → deploy health → benchmark → metrics,
//! then the kubectl dump and teardown, with compat §2's retries, timeouts and budgets.
//!
//! Owns: the order of stages, what counts as a stage failure, and the artifact names of
//! compat §5. Must not: spawn processes itself (every command goes through `sandbox::run`) or
//! write files except through `artifacts`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Pipeline, Stage, VerifierSpec};
use crate::artifacts::{ArtifactDir, ArtifactError};
use crate::policy::rules::{CommandRules, REFUSED_RC, STRICT_ENV_DEFAULTS, Unattended};
use crate::policy::{Network, Policy, StageGrants};
use crate::repo::{Repo, RepoError};
use crate::sandbox::grants::{self, NetMode, RunPaths};
use crate::sandbox::proxy::Proxy;
use crate::sandbox::wasm::{self, PluginHost, Verdict};
use crate::sandbox::{
    self, Background, Capture, CommandOutcome, CommandSpec, DEFAULT_OUTPUT_CAP, Lifetime,
    TIMEOUT_RC,
};

/// The stages, in compat's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StageName {
    Auth,
    Tests,
    DeploySetup,
    DeployHealth,
    Benchmark,
    Metrics,
    DeployTeardown,
    Kubectl,
    Actions,
    Verifiers,
}

impl StageName {
    /// The policy stage whose grants this stage runs under.
    pub fn policy_stage(self) -> &'static str {
        match self {
            StageName::Metrics | StageName::Kubectl => "deploy_teardown",
            other => other.as_str(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StageName::Auth => "auth",
            StageName::Tests => "tests",
            StageName::DeploySetup => "deploy_setup",
            StageName::DeployHealth => "deploy_health",
            StageName::Benchmark => "benchmark",
            StageName::Metrics => "metrics",
            StageName::DeployTeardown => "deploy_teardown",
            StageName::Kubectl => "kubectl",
            StageName::Actions => "actions",
            StageName::Verifiers => "verifiers",
        }
    }
}

/// Largest metrics file the host will read.
const METRICS_CAP: usize = 16 * 1024 * 1024;

/// Settings resolved by the CLI for one verification.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    pub test_cmd: Option<String>,
    pub unattended: Unattended,
    /// The runner's environment; commands see only what their grants pass from it.
    pub runner_env: Vec<(String, String)>,
    pub policy: Policy,
    /// The paths grants are resolved against (repo, private temp dir, protected files).
    pub paths: RunPaths,
    /// Print progress lines to stderr while stages run.
    pub progress: bool,
}

/// One attempt of one command, as written to `result.json`.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub cmd: String,
    /// 0-based position of the command in its stage.
    pub cmd_index: usize,
    pub rc: i32,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub attempt: u32,
    pub stdout_dropped_bytes: u64,
    pub stderr_dropped_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_total_seconds_exceeded: Option<f64>,
}

/// What one stage did.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: StageName,
    pub ok: bool,
    pub rc: i32,
    pub failed_index: Option<usize>,
    pub total_results: usize,
    pub duration_ms: u64,
    /// The last attempt's logs.
    pub stdout_path: Option<PathBuf>,
    pub stderr_path: Option<PathBuf>,
    #[serde(skip)]
    pub attempts: Vec<AttemptRecord>,
}

/// The whole verification, as written to `summary.json` and printed by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    pub ok: bool,
    pub failed_stage: Option<StageName>,
    pub auth_rc: Option<i32>,
    pub tests_rc: Option<i32>,
    pub deploy_setup_rc: Option<i32>,
    pub deploy_health_rc: Option<i32>,
    pub benchmark_rc: Option<i32>,
    pub deploy_teardown_rc: Option<i32>,
    pub metrics_path: Option<String>,
    pub metrics_ok: Option<bool>,
    pub metrics_errors: Vec<String>,
    /// Whether every verifier plugin passed (`None` when there are none or they did not run).
    pub verifiers_ok: Option<bool>,
    /// One verdict per verifier plugin, findings included.
    pub verifiers: Vec<Verdict>,
    pub test_cmd: String,
    pub artifacts_dir: PathBuf,
    pub stages: Vec<StageReport>,
    pub warnings: Vec<String>,
    /// `enforce`, or `off` when commands ran without kernel confinement.
    pub sandbox: crate::policy::SandboxMode,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error("cannot start the network proxy: {0}")]
    Proxy(String),
    #[error("cannot start the plugin host: {0}")]
    Plugin(String),
}

/// One verification of one repo.
pub struct Verification<'a> {
    pub repo: &'a Repo,
    pub pipeline: Option<&'a Pipeline>,
    pub settings: &'a VerifySettings,
    pub out: &'a ArtifactDir,
    /// Proxies started for stages with a host allowlist, kept until the verification ends.
    pub proxies: std::cell::RefCell<Vec<(String, Proxy)>>,
    /// The helper holding `deploy.setup`'s services, whose network later stages join.
    pub session: std::cell::Cell<Option<i32>>,
    /// The WASI plugin host, started when the first plugin runs.
    pub plugin_host: std::cell::OnceCell<PluginHost>,
}

impl<'a> Verification<'a> {
    pub fn new(
        repo: &'a Repo,
        pipeline: Option<&'a Pipeline>,
        settings: &'a VerifySettings,
        out: &'a ArtifactDir,
    ) -> Self {
        Verification {
            repo,
            pipeline,
            settings,
            out,
            proxies: Default::default(),
            session: Default::default(),
            plugin_host: Default::default(),
        }
    }
}

/// The stage options a command list runs with.
pub struct StageRun<'s> {
    pub name: StageName,
    /// The artifact file prefix: the stage's name, or an action's id.
    pub label: &'s str,
    pub cmds: &'s [String],
    pub config: &'s Stage,
    pub interactive: bool,
    pub lifetime: Lifetime,
}

impl<'s> StageRun<'s> {
    fn new(name: StageName, cmds: &'s [String], config: &'s Stage) -> Self {
        StageRun {
            name,
            label: name.as_str(),
            cmds,
            config,
            interactive: false,
            lifetime: Lifetime::Command,
        }
    }
}

impl Verification<'_> {
    fn rules(&self, grants: &StageGrants) -> CommandRules {
        CommandRules::new(self.pipeline.map(|p| &p.security), self.settings.unattended)
            .with_extra(&grants.allowlist, &grants.denylist)
    }

    fn output_cap(grants: &StageGrants) -> usize {
        grants
            .limits
            .output_bytes
            .map_or(DEFAULT_OUTPUT_CAP, |b| b as usize)
    }

    /// The proxy socket for a stage whose network is a host allowlist, started on first use.
    fn proxy_for(&self, grants: &StageGrants) -> Result<Option<std::path::PathBuf>, VerifyError> {
        let Network::Hosts(rules) = &grants.network else {
            return Ok(None);
        };
        let mut proxies = self.proxies.borrow_mut();
        if let Some((_, p)) = proxies.iter().find(|(s, _)| *s == grants.stage) {
            return Ok(Some(p.socket().to_path_buf()));
        }
        let socket = self
            .settings
            .paths
            .tmp
            .with_file_name(format!("proxy-{}.sock", grants.stage));
        let proxy =
            Proxy::start(&socket, rules.clone()).map_err(|e| VerifyError::Proxy(e.to_string()))?;
        proxies.push((grants.stage.clone(), proxy));
        Ok(Some(socket))
    }

    /// Builds the spec for one command under its stage's grants: confinement, environment
    /// from scratch, timeout. With `record`, writes the grants actually applied into the
    /// artifacts (`sandbox exec` has no artifacts to write them to).
    fn spec_for(
        &self,
        record: bool,
        stage: StageName,
        label: &str,
        cmd: &str,
        cwd: PathBuf,
        config: &Stage,
    ) -> Result<(CommandSpec, usize), VerifyError> {
        let grants = self.settings.policy.for_stage(stage.policy_stage());
        let proxy = self.proxy_for(&grants)?;
        let mut confinement = grants::confinement_for(
            &grants,
            &self.settings.paths,
            proxy.as_deref().map(|s| (s, grants::PROXY_PORT)),
        );
        if let (Some(c), Some(pid)) = (confinement.as_mut(), self.session.get())
            && stage != StageName::DeploySetup
            && !matches!(c.network, Some(NetMode::Host))
        {
            // Reach the services deploy.setup started: same network, same user namespace.
            c.join = Some(pid);
        }
        let mut env = grants::command_env(
            &grants,
            &self.settings.runner_env,
            &self.settings.paths.tmp,
            confinement.as_ref(),
        );
        self.add_stage_env(&mut env, config);
        let mut spec = CommandSpec::shell(cmd, cwd, env);
        spec.timeout = self.command_timeout(config, &grants);
        spec.confinement = confinement;
        if record {
            #[derive(Serialize)]
            struct Applied<'g> {
                grants: &'g StageGrants,
                confinement: &'g Option<sandbox::grants::Confinement>,
                env_names: Vec<&'g str>,
            }
            self.out.write_json(
                &format!("{label}_grants.json"),
                &Applied {
                    grants: &grants,
                    confinement: &spec.confinement,
                    env_names: spec.env.iter().map(|(k, _)| k.as_str()).collect(),
                },
            )?;
        }
        Ok((spec, Self::output_cap(&grants)))
    }

    /// Runs the chain, the dump and teardown; writes every artifact; returns the summary.
    pub fn run(&self) -> Result<VerifySummary, VerifyError> {
        let default = Pipeline::default();
        let pipeline = self.pipeline.unwrap_or(&default);
        let test_cmds = pipeline.effective_test_cmds(self.settings.test_cmd.as_deref());
        let mut summary = VerifySummary {
            ok: true,
            failed_stage: None,
            auth_rc: None,
            tests_rc: None,
            deploy_setup_rc: None,
            deploy_health_rc: None,
            benchmark_rc: None,
            deploy_teardown_rc: None,
            metrics_path: pipeline
                .benchmark
                .as_ref()
                .and_then(|b| b.metrics_path.clone()),
            metrics_ok: None,
            metrics_errors: Vec::new(),
            verifiers_ok: None,
            verifiers: Vec::new(),
            test_cmd: super::join_cmds(&test_cmds),
            artifacts_dir: self.out.path().to_path_buf(),
            stages: Vec::new(),
            warnings: pipeline.warnings.clone(),
            sandbox: self.settings.policy.sandbox,
        };
        let mut services: Vec<Background> = Vec::new();
        self.run_chain(pipeline, &test_cmds, &mut summary, &mut services)?;
        if let Some(deploy) = &pipeline.deploy {
            if deploy.kubectl_dump.enabled {
                self.kubectl_dump(&deploy.kubectl_dump)?;
            }
            if !deploy.teardown_cmds.is_empty() && deploy.teardown_policy.runs_after(summary.ok) {
                let report = self.run_stage(&StageRun::new(
                    StageName::DeployTeardown,
                    &deploy.teardown_cmds,
                    &deploy.common,
                ))?;
                summary.deploy_teardown_rc = Some(report.rc);
                summary.stages.push(report);
            }
        }
        // Services started by deploy setup end here, after teardown had its chance.
        self.session.set(None);
        drop(services);
        for (stage, proxy) in self.proxies.borrow().iter() {
            self.out
                .write_json(&format!("{stage}_network.json"), &proxy.decisions())?;
        }
        self.out.write_json("summary.json", &summary)?;
        Ok(summary)
    }

    fn run_chain(
        &self,
        pipeline: &Pipeline,
        test_cmds: &[String],
        summary: &mut VerifySummary,
        services: &mut Vec<Background>,
    ) -> Result<(), VerifyError> {
        let empty = Stage::default();
        let tests_config = pipeline.tests.as_ref().unwrap_or(&empty);
        let mut plan: Vec<StageRun<'_>> = Vec::new();
        if let Some(auth) = pipeline.auth.as_ref().filter(|a| !a.stage.cmds.is_empty()) {
            let mut run = StageRun::new(StageName::Auth, &auth.stage.cmds, &auth.stage);
            run.interactive = auth.interactive && self.settings.unattended == Unattended::Guided;
            plan.push(run);
        }
        plan.push(StageRun::new(StageName::Tests, test_cmds, tests_config));
        if let Some(deploy) = &pipeline.deploy {
            for (name, cmds, lifetime) in [
                (
                    StageName::DeploySetup,
                    &deploy.setup_cmds,
                    Lifetime::Session,
                ),
                (
                    StageName::DeployHealth,
                    &deploy.health_cmds,
                    Lifetime::Command,
                ),
            ] {
                if !cmds.is_empty() {
                    let mut run = StageRun::new(name, cmds, &deploy.common);
                    run.lifetime = lifetime;
                    plan.push(run);
                }
            }
        }
        if let Some(bench) = pipeline
            .benchmark
            .as_ref()
            .filter(|b| !b.stage.cmds.is_empty())
        {
            plan.push(StageRun::new(
                StageName::Benchmark,
                &bench.stage.cmds,
                &bench.stage,
            ));
        }
        for stage in &plan {
            let (report, background) = self.run_stage_keeping(stage)?;
            // Later stages join the services' namespaces only when they have their own (an
            // isolated or proxied network); on the host network they are reachable anyway.
            let setup = self.settings.policy.for_stage(stage.name.policy_stage());
            let joinable = setup.sandbox == crate::policy::SandboxMode::Enforce
                && setup.network != Network::All;
            if let Some(last) = background.last().filter(|_| joinable) {
                self.session.set(Some(last.helper_pid()));
            }
            services.extend(background);
            let rc = Some(report.rc);
            match stage.name {
                StageName::Auth => summary.auth_rc = rc,
                StageName::Tests => summary.tests_rc = rc,
                StageName::DeploySetup => summary.deploy_setup_rc = rc,
                StageName::DeployHealth => summary.deploy_health_rc = rc,
                StageName::Benchmark => summary.benchmark_rc = rc,
                _ => {}
            }
            let ok = report.ok;
            summary.stages.push(report);
            if !ok {
                summary.ok = false;
                summary.failed_stage = Some(stage.name);
                return Ok(());
            }
        }
        if let Some(path) = pipeline
            .benchmark
            .as_ref()
            .and_then(|b| b.metrics_path.as_deref())
        {
            let required = pipeline
                .benchmark
                .as_ref()
                .map_or(&[][..], |b| b.required_keys.as_slice());
            summary.metrics_errors = self.check_metrics(path, required)?;
            summary.metrics_ok = Some(summary.metrics_errors.is_empty());
            if !summary.metrics_errors.is_empty() {
                summary.ok = false;
                summary.failed_stage = Some(StageName::Metrics);
                self.progress(&format!("metrics: {}", summary.metrics_errors.join("; ")));
                return Ok(());
            }
        }
        if !pipeline.verifiers.is_empty() {
            let verdicts = self.run_verifiers(&pipeline.verifiers)?;
            let ok = verdicts.iter().all(|v| v.passed);
            summary.verifiers_ok = Some(ok);
            summary.verifiers = verdicts;
            if !ok {
                summary.ok = false;
                summary.failed_stage = Some(StageName::Verifiers);
            }
        }
        Ok(())
    }

    /// The plugin host, started on first use.
    pub fn plugin_host(&self) -> Result<&PluginHost, VerifyError> {
        if let Some(host) = self.plugin_host.get() {
            return Ok(host);
        }
        let host = PluginHost::new(wasm::default_cache_dir())
            .map_err(|e| VerifyError::Plugin(e.to_string()))?;
        Ok(self.plugin_host.get_or_init(|| host))
    }

    /// Runs one plugin under the policy's grants for it plus the spec's own; failures to
    /// load or to grant become failed verdicts.
    pub fn run_plugin(&self, spec: &VerifierSpec) -> Result<Verdict, VerifyError> {
        let grant = self.settings.policy.for_plugin(&spec.plugin);
        let config = spec.config.to_string();
        let failed = |error: String| Verdict {
            plugin: spec.plugin.clone(),
            passed: false,
            summary: error.clone(),
            findings: Vec::new(),
            error: Some(error),
            stdout: String::new(),
            stderr: String::new(),
            fuel_used: 0,
        };
        let grants = match grants::plugin_grants(
            &grant,
            spec.grants.as_ref(),
            &self.settings.paths,
            &self.settings.runner_env,
        ) {
            Ok(g) => g,
            Err(e) => return Ok(failed(e)),
        };
        match self.plugin_host()?.verify(&spec.plugin, &config, &grants) {
            Ok(verdict) => Ok(verdict),
            Err(e) => Ok(failed(e.to_string())),
        }
    }

    /// Runs every verifier; writes each verdict to `verifiers/NN_<plugin>.json`.
    fn run_verifiers(&self, specs: &[VerifierSpec]) -> Result<Vec<Verdict>, VerifyError> {
        let dir = self.out.subdir("verifiers")?;
        let mut verdicts = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            self.progress(&format!("verifiers: running plugin `{}`", spec.plugin));
            let verdict = self.run_plugin(spec)?;
            let safe: String = spec
                .plugin
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            dir.write_json(&format!("{:02}_{safe}.json", i + 1), &verdict)?;
            self.progress(&format!(
                "verifiers: `{}` {}: {}",
                spec.plugin,
                if verdict.passed { "passed" } else { "FAILED" },
                verdict.summary
            ));
            verdicts.push(verdict);
        }
        Ok(verdicts)
    }

    fn progress(&self, line: &str) {
        if self.settings.progress {
            eprintln!("fsm-runner: {line}");
        }
    }

    pub fn run_stage(&self, stage: &StageRun<'_>) -> Result<StageReport, VerifyError> {
        let (report, background) = self.run_stage_keeping(stage)?;
        drop(background);
        Ok(report)
    }

    /// Runs a stage's commands with retries; returns its report and any services it started.
    fn run_stage_keeping(
        &self,
        stage: &StageRun<'_>,
    ) -> Result<(StageReport, Vec<Background>), VerifyError> {
        let started = Instant::now();
        let mut attempts: Vec<AttemptRecord> = Vec::new();
        let mut services = Vec::new();
        let mut failed_index = None;
        let workdir = self.repo.workdir(stage.config.workdir.as_deref());
        let budget = self.pipeline.and_then(|p| p.security.max_total_seconds);
        'commands: for (index, cmd) in stage.cmds.iter().enumerate() {
            let cwd = match &workdir {
                Ok(cwd) => cwd.clone(),
                Err(e) => {
                    let record = self.refusal(stage, index, 1, cmd, 2, &workdir_reason(e))?;
                    attempts.push(record);
                    failed_index = Some(index);
                    break 'commands;
                }
            };
            for attempt in 1..=stage.config.retries + 1 {
                if let Some(limit) = budget.filter(|l| started.elapsed().as_secs_f64() > *l) {
                    let reason = format!("max_total_seconds_exceeded: {}", format_seconds(limit));
                    let mut record =
                        self.refusal(stage, index, attempt, cmd, TIMEOUT_RC, &reason)?;
                    record.refused = None;
                    record.max_total_seconds_exceeded = Some(limit);
                    self.write_result(stage.label, index, attempt, &record)?;
                    attempts.push(record);
                    failed_index = Some(index);
                    break 'commands;
                }
                let grants = self.settings.policy.for_stage(stage.name.policy_stage());
                if let Err(reason) = self.rules(&grants).check(cmd) {
                    attempts.push(self.refusal(stage, index, attempt, cmd, REFUSED_RC, &reason)?);
                    failed_index = Some(index);
                    break 'commands;
                }
                let (record, background) = self.attempt(stage, index, attempt, cmd, cwd.clone())?;
                services.extend(background);
                let rc = record.rc;
                attempts.push(record);
                if rc == 0 {
                    continue 'commands;
                }
            }
            failed_index = Some(index);
            break;
        }
        let report = self.finish_stage(stage, attempts, failed_index, started)?;
        Ok((report, services))
    }

    fn finish_stage(
        &self,
        run: &StageRun<'_>,
        attempts: Vec<AttemptRecord>,
        failed_index: Option<usize>,
        started: Instant,
    ) -> Result<StageReport, VerifyError> {
        let stage = run.label;
        #[derive(Serialize)]
        struct StageSummary {
            ok: bool,
            failed_index: Option<usize>,
            total_results: usize,
        }
        let ok = failed_index.is_none();
        self.out.write_json(
            &format!("{stage}_summary.json"),
            &StageSummary {
                ok,
                failed_index,
                total_results: attempts.len(),
            },
        )?;
        let rc = attempts.last().map_or(0, |a| a.rc);
        let (mut stdout_path, mut stderr_path) = (None, None);
        if let Some(last) = attempts.last() {
            let prefix = attempt_prefix(stage, last.cmd_index, last.attempt);
            for suffix in ["cmd.txt", "stdout.txt", "stderr.txt", "result.json"] {
                // The last attempt again under the stage's own name (compat §5).
                let from = self.out.path().join(format!("{prefix}_{suffix}"));
                let bytes = std::fs::read(&from).unwrap_or_default();
                let to = self.out.write_bytes(&format!("{stage}_{suffix}"), &bytes)?;
                match suffix {
                    "stdout.txt" => stdout_path = Some(to),
                    "stderr.txt" => stderr_path = Some(to),
                    _ => {}
                }
            }
        }
        Ok(StageReport {
            stage: run.name,
            ok,
            rc,
            failed_index,
            total_results: attempts.len(),
            duration_ms: started.elapsed().as_millis() as u64,
            stdout_path,
            stderr_path,
            attempts,
        })
    }

    /// Records a command that did not run: refused by the rules, a bad workdir, a budget.
    fn refusal(
        &self,
        stage: &StageRun<'_>,
        index: usize,
        attempt: u32,
        cmd: &str,
        rc: i32,
        reason: &str,
    ) -> Result<AttemptRecord, VerifyError> {
        self.progress(&format!(
            "{}: `{cmd}` refused: {reason}",
            stage.name.as_str()
        ));
        let mut stderr = Capture::new(DEFAULT_OUTPUT_CAP);
        stderr.push(format!("{reason}\n").as_bytes());
        let outcome = CommandOutcome {
            rc,
            timed_out: false,
            duration: Duration::ZERO,
            stdout: Capture::new(0),
            stderr,
        };
        let mut record = self.record(stage.label, index, attempt, cmd, &outcome)?;
        record.refused = Some(reason.to_string());
        self.write_result(stage.label, index, attempt, &record)?;
        Ok(record)
    }

    fn attempt(
        &self,
        stage: &StageRun<'_>,
        index: usize,
        attempt: u32,
        cmd: &str,
        cwd: PathBuf,
    ) -> Result<(AttemptRecord, Option<Background>), VerifyError> {
        let (mut spec, output_cap) =
            self.spec_for(true, stage.name, stage.label, cmd, cwd, stage.config)?;
        spec.interactive = stage.interactive;
        spec.lifetime = stage.lifetime;
        self.progress(&format!(
            "{}: running `{cmd}` (command {}, try {attempt})",
            stage.label,
            index + 1
        ));
        let (outcome, background) = sandbox::run(&spec, output_cap)?;
        let record = self.record(stage.label, index, attempt, cmd, &outcome)?;
        self.progress(&format!(
            "{}: rc={}{} in {:.2}s",
            stage.label,
            outcome.rc,
            if outcome.timed_out {
                " (timed out)"
            } else {
                ""
            },
            outcome.duration.as_secs_f64()
        ));
        Ok((record, background))
    }

    /// Writes the attempt's four files and returns its record.
    fn record(
        &self,
        stage: &str,
        index: usize,
        attempt: u32,
        cmd: &str,
        outcome: &CommandOutcome,
    ) -> Result<AttemptRecord, VerifyError> {
        let record = AttemptRecord {
            cmd: cmd.to_string(),
            cmd_index: index,
            rc: outcome.rc,
            timed_out: outcome.timed_out,
            duration_ms: outcome.duration.as_millis() as u64,
            attempt,
            stdout_dropped_bytes: outcome.stdout.dropped(),
            stderr_dropped_bytes: outcome.stderr.dropped(),
            refused: None,
            max_total_seconds_exceeded: None,
        };
        let prefix = attempt_prefix(stage, index, attempt);
        self.out.write_text(&format!("{prefix}_cmd.txt"), cmd)?;
        self.out
            .write_text(&format!("{prefix}_stdout.txt"), &outcome.stdout.to_text())?;
        self.out
            .write_text(&format!("{prefix}_stderr.txt"), &outcome.stderr.to_text())?;
        self.write_result(stage, index, attempt, &record)?;
        Ok(record)
    }

    fn write_result(
        &self,
        stage: &str,
        index: usize,
        attempt: u32,
        record: &AttemptRecord,
    ) -> Result<(), VerifyError> {
        let prefix = attempt_prefix(stage, index, attempt);
        self.out
            .write_json(&format!("{prefix}_result.json"), record)?;
        Ok(())
    }

    /// The stage's timeout, capped by `security.max_cmd_seconds` and the policy's wall time.
    fn command_timeout(&self, config: &Stage, grants: &StageGrants) -> Option<Duration> {
        let caps = [
            config.timeout_seconds,
            self.pipeline.and_then(|p| p.security.max_cmd_seconds),
            grants.limits.wall_seconds,
        ];
        caps.into_iter()
            .flatten()
            .reduce(f64::min)
            .map(Duration::from_secs_f64)
    }

    /// The spec for one argv (no shell) under `stage`'s grants, recording nothing.
    pub fn argv_spec(
        &self,
        stage: &str,
        argv: &[String],
        config: &Stage,
    ) -> Result<CommandSpec, VerifyError> {
        let name = match stage {
            "auth" => StageName::Auth,
            "deploy_setup" => StageName::DeploySetup,
            "deploy_health" => StageName::DeployHealth,
            "deploy_teardown" => StageName::DeployTeardown,
            "benchmark" => StageName::Benchmark,
            "actions" => StageName::Actions,
            _ => StageName::Tests,
        };
        let root = self.repo.root().to_path_buf();
        let (mut spec, _) = self.spec_for(false, name, stage, "", root, config)?;
        spec.argv = argv.to_vec();
        spec.interactive = true;
        Ok(spec)
    }

    /// Strict-mode defaults where unset, then the stage's `env` (human-owned, always passed).
    fn add_stage_env(&self, env: &mut Vec<(String, String)>, config: &Stage) {
        if self.settings.unattended == Unattended::Strict {
            for (key, value) in STRICT_ENV_DEFAULTS {
                if !env.iter().any(|(k, _)| k == key) {
                    env.push((key.to_string(), value.to_string()));
                }
            }
        }
        for (key, value) in &config.env {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
    }

    /// Checks the metrics file; copies it into the artifacts whatever it holds.
    fn check_metrics(&self, path: &str, required: &[String]) -> Result<Vec<String>, VerifyError> {
        let placeholder = self
            .settings
            .paths
            .writable
            .iter()
            .any(|w| w.ends_with(path.trim_start_matches("./")));
        let bytes = match self.repo.read_untrusted(path, METRICS_CAP) {
            Ok((bytes, _)) if bytes.is_empty() && placeholder => {
                return Ok(vec![format!("metrics_file_missing: {path}")]);
            }
            Ok((bytes, _)) => bytes,
            Err(RepoError::NotFound(_)) => {
                return Ok(vec![format!("metrics_file_missing: {path}")]);
            }
            Err(RepoError::OutsideRepo(_)) => {
                return Ok(vec![format!("metrics_file_outside_repo: {path}")]);
            }
            Err(RepoError::NotAFile(_)) => {
                return Ok(vec![format!("metrics_file_not_regular: {path}")]);
            }
            Err(e) => return Ok(vec![format!("metrics_file_unreadable: {e}")]),
        };
        self.out.write_bytes("metrics.json", &bytes)?;
        let value: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return Ok(vec![format!("invalid_json: {e}")]),
        };
        let Some(object) = value.as_object() else {
            return Ok(vec!["metrics_json_not_object".into()]);
        };
        let missing: Vec<&str> = required
            .iter()
            .filter(|k| !object.contains_key(k.as_str()))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            Ok(Vec::new())
        } else {
            Ok(vec![format!("missing_keys: {}", missing.join(", "))])
        }
    }

    /// Dumps cluster state into `kubectl/` when kubectl is on PATH; failures are recorded,
    /// never fatal.
    fn kubectl_dump(&self, dump: &super::KubectlDump) -> Result<(), VerifyError> {
        let Some(kubectl) = find_on_path("kubectl", &self.settings.runner_env) else {
            self.progress("kubectl_dump: kubectl not found on PATH, skipped");
            return Ok(());
        };
        let dir = self.out.subdir("kubectl")?;
        let kubectl = kubectl.display().to_string();
        let mut commands: Vec<(&str, Vec<String>)> = vec![
            (
                "nodes",
                vec!["get".into(), "nodes".into(), "-o".into(), "wide".into()],
            ),
            ("namespaces", vec!["get".into(), "namespaces".into()]),
            (
                "pods",
                vec![
                    "get".into(),
                    "pods".into(),
                    "-A".into(),
                    "-o".into(),
                    "wide".into(),
                ],
            ),
            ("all", vec!["get".into(), "all".into(), "-A".into()]),
            ("events", vec!["get".into(), "events".into(), "-A".into()]),
        ];
        if let (true, Some(selector)) = (dump.include_logs, &dump.label_selector) {
            let mut args = vec![
                "logs".into(),
                "-l".into(),
                selector.clone(),
                "--all-containers".into(),
                "--tail=2000".into(),
            ];
            match &dump.namespace {
                Some(ns) => args.extend(["-n".to_string(), ns.clone()]),
                None => args.push("-A".into()),
            }
            commands.push(("logs", args));
        }
        for (name, args) in commands {
            let config = Stage {
                timeout_seconds: Some(60.0),
                ..Stage::default()
            };
            let label = format!("kubectl_{name}");
            let (mut spec, cap) = self.spec_for(
                true,
                StageName::Kubectl,
                &label,
                "",
                self.repo.root().to_path_buf(),
                &config,
            )?;
            spec.argv = std::iter::once(kubectl.clone()).chain(args).collect();
            let (outcome, _) = sandbox::run(&spec, cap)?;
            dir.write_text(&format!("{name}.txt"), &outcome.stdout.to_text())?;
            dir.write_text(&format!("{name}.stderr.txt"), &outcome.stderr.to_text())?;
        }
        Ok(())
    }
}

/// `<stage>_cmdNN_tryNN`, both numbers 1-based.
fn attempt_prefix(stage: &str, index: usize, attempt: u32) -> String {
    format!("{stage}_cmd{:02}_try{attempt:02}", index + 1)
}

fn workdir_reason(e: &RepoError) -> String {
    match e {
        RepoError::OutsideRepo(w) => format!("workdir_outside_repo: {w}"),
        other => format!("bad_workdir: {other}"),
    }
}

fn format_seconds(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

/// Finds `program` in the PATH of `env`.
pub fn find_on_path(program: &str, env: &[(String, String)]) -> Option<PathBuf> {
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())?;
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
