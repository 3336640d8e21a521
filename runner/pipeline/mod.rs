//! The `pipeline.yml` (version 1) verification contract: its model and its parser.
//!
//! Owns: every rule of compat §2 about what a pipeline file may contain, with errors that name
//! the file, line, column and field. Must not: run anything (that is [`verify`]) or read
//! files other than the one it is given.

pub mod verify;

use std::path::{Path, PathBuf};

use crate::yaml::{self, ConfigError, Field};

/// The parsed pipeline. Absent sections are `None`; absent keys take compat defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pipeline {
    pub security: Security,
    pub auth: Option<Auth>,
    pub tests: Option<Stage>,
    pub deploy: Option<Deploy>,
    pub benchmark: Option<Benchmark>,
    /// WASI verifier plugins run after metrics validation (stage `verifiers`).
    pub verifiers: Vec<VerifierSpec>,
    pub artifacts_out_dir: Option<String>,
    /// Where the pipeline came from, for messages.
    pub source: PathBuf,
    /// Unknown keys and deprecated sections, already formatted with their positions.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    #[default]
    Safe,
    System,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Security {
    pub mode: SecurityMode,
    pub allowlist: Vec<String>,
    pub denylist: Vec<String>,
    pub max_cmd_seconds: Option<f64>,
    pub max_total_seconds: Option<f64>,
}

/// What every stage section shares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stage {
    pub cmds: Vec<String>,
    pub timeout_seconds: Option<f64>,
    pub retries: u32,
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Auth {
    pub stage: Stage,
    pub interactive: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TeardownPolicy {
    #[default]
    Always,
    OnSuccess,
    OnFailure,
    Never,
}

impl TeardownPolicy {
    /// Whether teardown runs after a verification that passed (`true`) or failed.
    pub fn runs_after(self, verification_ok: bool) -> bool {
        match self {
            TeardownPolicy::Always => true,
            TeardownPolicy::OnSuccess => verification_ok,
            TeardownPolicy::OnFailure => !verification_ok,
            TeardownPolicy::Never => false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubectlDump {
    pub enabled: bool,
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub include_logs: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deploy {
    /// Timeout, retries, env and workdir shared by setup, health and teardown.
    pub common: Stage,
    pub setup_cmds: Vec<String>,
    pub health_cmds: Vec<String>,
    pub teardown_cmds: Vec<String>,
    pub teardown_policy: TeardownPolicy,
    pub kubectl_dump: KubectlDump,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Benchmark {
    pub stage: Stage,
    pub metrics_path: Option<String>,
    pub required_keys: Vec<String>,
}

/// One entry of `verifiers:`.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifierSpec {
    /// A built-in plugin name or a path to a `.wasm` component.
    pub plugin: String,
    /// `config:` as JSON, handed to the plugin.
    pub config: serde_json::Value,
    /// Optional grants on top of the policy's for this plugin.
    pub grants: Option<crate::policy::Grant>,
}

/// Parses a `verifiers:` list (also the shape of an action's `plugin`/`config`/`grants`).
pub fn parse_verifier(field: &Field<'_>) -> Result<VerifierSpec, ConfigError> {
    let mut plugin = None;
    let mut config = serde_json::Value::Object(Default::default());
    let mut grants = None;
    let mut unknown = Vec::new();
    field.for_each_entry(&mut unknown, |key, value| {
        match key {
            "plugin" | "name" => plugin = Some(value.non_empty_string()?),
            "config" => config = yaml::to_json(value.node),
            "grants" => grants = Some(crate::policy::parse_grant(&value)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    let plugin = plugin
        .ok_or_else(|| field.error("needs `plugin:` (a built-in name or a path to a .wasm)"))?;
    Ok(VerifierSpec {
        plugin,
        config,
        grants,
    })
}

/// The default test command when neither `--test-cmd` nor `tests.cmds` gives one.
pub const DEFAULT_TEST_CMD: &str = "pytest -q";

impl Pipeline {
    /// The tests commands after compat's precedence: `--test-cmd`, `tests.cmds`, `pytest -q`.
    pub fn effective_test_cmds(&self, test_cmd: Option<&str>) -> Vec<String> {
        if let Some(cmd) = test_cmd.filter(|c| !c.trim().is_empty()) {
            return vec![cmd.to_string()];
        }
        match &self.tests {
            Some(t) if !t.cmds.is_empty() => t.cmds.clone(),
            _ => vec![DEFAULT_TEST_CMD.to_string()],
        }
    }
}

/// The test commands joined the way prompts and the plan template show them.
pub fn join_cmds(cmds: &[String]) -> String {
    cmds.join(" && ")
}

/// Reads and parses a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
    parse(path, &yaml::read(path)?)
}

/// Parses pipeline text; `file` is used for messages only.
pub fn parse(file: &Path, text: &str) -> Result<Pipeline, ConfigError> {
    let root = yaml::parse(file, text)?;
    let top = Field::root(file, &root);
    if !matches!(root.value, yaml::Value::Map(_)) && !top.is_null() {
        return Err(top.error("top level must be a mapping"));
    }
    let mut pipeline = Pipeline {
        source: file.to_path_buf(),
        ..Pipeline::default()
    };
    let mut warnings = Vec::new();
    top.for_each_entry(&mut warnings, |key, field| {
        match key {
            "version" => check_version(&field)?,
            "security" => pipeline.security = parse_security(&field, &mut pipeline.warnings)?,
            "tests" => pipeline.tests = Some(parse_tests(&field, &mut pipeline.warnings)?),
            "auth" => pipeline.auth = Some(parse_auth(&field, &mut pipeline.warnings)?),
            "deploy" => pipeline.deploy = Some(parse_deploy(&field, &mut pipeline.warnings)?),
            "benchmark" => {
                pipeline.benchmark = Some(parse_benchmark(&field, &mut pipeline.warnings)?)
            }
            "verifiers" => {
                for (i, node) in field.items()?.iter().enumerate() {
                    pipeline
                        .verifiers
                        .push(parse_verifier(&field.index(i, node))?);
                }
            }
            "artifacts" => {
                pipeline.artifacts_out_dir = parse_artifacts(&field, &mut pipeline.warnings)?
            }
            "tooling" => pipeline
                .warnings
                .push(field.warning("`tooling` is deprecated and ignored")),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    pipeline.warnings.extend(warnings);
    Ok(pipeline)
}

fn check_version(field: &Field<'_>) -> Result<(), ConfigError> {
    match field.scalar_text()? {
        None | Some("1") => Ok(()),
        Some(other) => Err(field.error(format!(
            "must be 1, got `{other}` (only pipeline version 1 is supported)"
        ))),
    }
}

/// Collects a command list given either as `<name>s: [..]` or `<name>: ".."`; the list wins.
#[derive(Default)]
struct CmdSlot {
    list: Option<Vec<String>>,
    single: Option<Vec<String>>,
}

impl CmdSlot {
    fn set_list(&mut self, field: &Field<'_>) -> Result<bool, ConfigError> {
        self.list = Some(parse_cmds(field)?);
        Ok(true)
    }

    fn set_single(&mut self, field: &Field<'_>) -> Result<bool, ConfigError> {
        self.single = Some(parse_cmd(field)?);
        Ok(true)
    }

    fn finish(self) -> Vec<String> {
        self.list.or(self.single).unwrap_or_default()
    }
}

/// Parses the keys every stage shares; returns false for keys it does not own.
fn parse_common(stage: &mut Stage, key: &str, field: &Field<'_>) -> Result<bool, ConfigError> {
    match key {
        "timeout_seconds" => stage.timeout_seconds = field.non_negative_number()?,
        "retries" => stage.retries = field.count()?.unwrap_or(0),
        "env" => stage.env = parse_env(field)?,
        "workdir" => stage.workdir = field.string()?.filter(|w| !w.trim().is_empty()),
        _ => return Ok(false),
    }
    Ok(true)
}

/// A `cmds` list: non-empty strings (a lone string is accepted as one command).
fn parse_cmds(field: &Field<'_>) -> Result<Vec<String>, ConfigError> {
    if let yaml::Value::Scalar { .. } = field.node.value {
        return parse_cmd(field);
    }
    field.string_list()
}

/// A single `cmd`: empty or null means no command.
fn parse_cmd(field: &Field<'_>) -> Result<Vec<String>, ConfigError> {
    Ok(field
        .string()?
        .filter(|c| !c.trim().is_empty())
        .into_iter()
        .collect())
}

fn parse_env(field: &Field<'_>) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = Vec::new();
    for (key, node) in field.entries()? {
        env.push((key.clone(), field.key(key, node).python_str()?));
    }
    Ok(env)
}

fn parse_security(
    section: &Field<'_>,
    warnings: &mut Vec<String>,
) -> Result<Security, ConfigError> {
    let mut security = Security::default();
    section.for_each_entry(warnings, |key, field| {
        match key {
            "mode" => {
                security.mode = match field.scalar_text()? {
                    None | Some("safe") => SecurityMode::Safe,
                    Some("system") => SecurityMode::System,
                    Some(other) => {
                        return Err(
                            field.error(format!("must be `safe` or `system`, got `{other}`"))
                        );
                    }
                }
            }
            "allowlist" => security.allowlist = field.string_list()?,
            "denylist" => security.denylist = field.string_list()?,
            "max_cmd_seconds" => security.max_cmd_seconds = field.non_negative_number()?,
            "max_total_seconds" => security.max_total_seconds = field.non_negative_number()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(security)
}

fn parse_tests(section: &Field<'_>, warnings: &mut Vec<String>) -> Result<Stage, ConfigError> {
    let mut stage = Stage::default();
    let mut cmds = CmdSlot::default();
    section.for_each_entry(warnings, |key, field| match key {
        "cmds" => cmds.set_list(&field),
        "cmd" => cmds.set_single(&field),
        _ => parse_common(&mut stage, key, &field),
    })?;
    stage.cmds = cmds.finish();
    Ok(stage)
}

fn parse_auth(section: &Field<'_>, warnings: &mut Vec<String>) -> Result<Auth, ConfigError> {
    let mut auth = Auth::default();
    let mut cmds = CmdSlot::default();
    section.for_each_entry(warnings, |key, field| match key {
        // `steps` is the old tool's alias of `cmds`.
        "cmds" | "steps" => cmds.set_list(&field),
        "cmd" => cmds.set_single(&field),
        "interactive" => {
            auth.interactive = field.bool()?.unwrap_or(false);
            Ok(true)
        }
        _ => parse_common(&mut auth.stage, key, &field),
    })?;
    auth.stage.cmds = cmds.finish();
    Ok(auth)
}

fn parse_teardown_policy(field: &Field<'_>) -> Result<TeardownPolicy, ConfigError> {
    Ok(match field.scalar_text()? {
        None | Some("always") => TeardownPolicy::Always,
        Some("on_success") => TeardownPolicy::OnSuccess,
        Some("on_failure") => TeardownPolicy::OnFailure,
        Some("never") => TeardownPolicy::Never,
        Some(other) => {
            return Err(field.error(format!(
                "must be one of always, on_success, on_failure, never; got `{other}`"
            )));
        }
    })
}

fn parse_kubectl_dump(
    section: &Field<'_>,
    warnings: &mut Vec<String>,
) -> Result<KubectlDump, ConfigError> {
    let mut dump = KubectlDump::default();
    section.for_each_entry(warnings, |key, field| {
        match key {
            "enabled" => dump.enabled = field.bool()?.unwrap_or(false),
            "namespace" => dump.namespace = field.string()?,
            "label_selector" => dump.label_selector = field.string()?,
            "include_logs" => dump.include_logs = field.bool()?.unwrap_or(false),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(dump)
}

fn parse_deploy(section: &Field<'_>, warnings: &mut Vec<String>) -> Result<Deploy, ConfigError> {
    let mut deploy = Deploy::default();
    let (mut setup, mut health, mut teardown) = Default::default();
    let mut nested = Vec::new();
    section.for_each_entry(warnings, |key, field| {
        let slot: &mut CmdSlot = match key {
            "setup_cmds" | "setup_cmd" => &mut setup,
            "health_cmds" | "health_cmd" => &mut health,
            "teardown_cmds" | "teardown_cmd" => &mut teardown,
            "teardown_policy" => {
                deploy.teardown_policy = parse_teardown_policy(&field)?;
                return Ok(true);
            }
            "kubectl_dump" => {
                deploy.kubectl_dump = parse_kubectl_dump(&field, &mut nested)?;
                return Ok(true);
            }
            _ => return parse_common(&mut deploy.common, key, &field),
        };
        if key.ends_with('s') {
            slot.set_list(&field)
        } else {
            slot.set_single(&field)
        }
    })?;
    warnings.extend(nested);
    deploy.setup_cmds = setup.finish();
    deploy.health_cmds = health.finish();
    deploy.teardown_cmds = teardown.finish();
    Ok(deploy)
}

fn parse_benchmark(
    section: &Field<'_>,
    warnings: &mut Vec<String>,
) -> Result<Benchmark, ConfigError> {
    let mut bench = Benchmark::default();
    let mut cmds = CmdSlot::default();
    section.for_each_entry(warnings, |key, field| match key {
        "run_cmds" => cmds.set_list(&field),
        "run_cmd" => cmds.set_single(&field),
        "metrics_path" => {
            bench.metrics_path = field.string()?.filter(|p| !p.trim().is_empty());
            Ok(true)
        }
        "required_keys" => {
            bench.required_keys = field.string_list()?;
            Ok(true)
        }
        _ => parse_common(&mut bench.stage, key, &field),
    })?;
    bench.stage.cmds = cmds.finish();
    Ok(bench)
}

fn parse_artifacts(
    section: &Field<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, ConfigError> {
    let mut out_dir = None;
    section.for_each_entry(warnings, |key, field| {
        if key != "out_dir" {
            return Ok(false);
        }
        out_dir = field.string()?.filter(|d| !d.trim().is_empty());
        Ok(true)
    })?;
    Ok(out_dir)
}

#[cfg(test)]
mod tests;
