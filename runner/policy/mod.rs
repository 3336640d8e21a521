//! What untrusted work may do: the policy file's grants, and the compat command rules.
//!
//! Owns: the policy model, parsing it with positions, merging defaults with per-stage
//! overrides into [`StageGrants`], and the environment-name rules (which names pass, which
//! look like secrets). Plain data and decisions: no I/O beyond reading the policy file, no
//! process control. The sandbox turns grants into kernel rules (`sandbox::grants`).

pub mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::yaml::{self, ConfigError, Field};

/// The built-in policy used when no `--policy` is given.
pub const DEFAULT_POLICY: &str = include_str!("default.yml");

/// The stages a policy can override.
pub const STAGES: &[&str] = &[
    "auth",
    "tests",
    "deploy_setup",
    "deploy_health",
    "deploy_teardown",
    "benchmark",
    "actions",
];

/// Whether commands are confined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Every grant is enforced by the kernel; a stage whose grants cannot be enforced is
    /// refused.
    #[default]
    Enforce,
    /// No kernel confinement: timeouts, process-tree cleanup, output caps and the command
    /// rules still apply. Loud in the output and recorded in the artifacts.
    Off,
}

/// A filesystem entry of a grant: a named root or a path (`~/` is the runner's HOME).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PathGrant {
    Root(NamedRoot),
    Path(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NamedRoot {
    /// OS directories (/usr, /bin, /lib*, /etc, /opt, ...).
    System,
    /// The real prefixes of the toolchains found on PATH.
    Toolchains,
    /// The target repository (protected files stay read-only).
    Repo,
    /// A private temp dir, also HOME and TMPDIR, mounted over /tmp.
    Tmp,
    /// The run's artifacts directory.
    Artifacts,
}

impl NamedRoot {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "system" => NamedRoot::System,
            "toolchains" => NamedRoot::Toolchains,
            "repo" => NamedRoot::Repo,
            "tmp" | "home" => NamedRoot::Tmp,
            "artifacts" => NamedRoot::Artifacts,
            _ => return None,
        })
    }
}

/// One allowed destination: `host`, `*.suffix`, with an optional port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HostRule {
    pub host: String,
    pub port: Option<u16>,
}

impl HostRule {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse::<u16>().ok()?)),
            None => (text.clone(), None),
        };
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        let valid = !bare.is_empty()
            && bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        valid.then_some(HostRule { host, port })
    }

    /// Whether a request to `host:port` is allowed by this rule.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// What network a stage gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Own network namespace: loopback only.
    None,
    /// The host's network.
    All,
    /// Only through the runner's proxy, only to these hosts.
    Hosts(Vec<HostRule>),
}

/// Resource limits; `None` means no limit of that kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Limits {
    pub wall_seconds: Option<f64>,
    pub memory_mb: Option<u64>,
    pub processes: Option<u64>,
    pub file_size_mb: Option<u64>,
    pub open_files: Option<u64>,
    pub output_bytes: Option<u64>,
    /// Plugins only: the CPU budget in wasmtime fuel units.
    pub fuel: Option<u64>,
}

impl Limits {
    fn overlay(&mut self, over: &Limits) {
        macro_rules! take {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f; } )* };
        }
        take!(
            wall_seconds,
            memory_mb,
            processes,
            file_size_mb,
            open_files,
            output_bytes
        );
    }
}

/// A grant as written in the file: every part optional, lists add to the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Grant {
    pub read: Vec<PathGrant>,
    pub write: Vec<PathGrant>,
    pub deny: Vec<PathGrant>,
    pub network: Option<Network>,
    pub env: Vec<String>,
    pub limits: Limits,
    pub allowlist: Vec<String>,
    pub denylist: Vec<String>,
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub source: PathBuf,
    pub sandbox: SandboxMode,
    pub defaults: Grant,
    pub stages: BTreeMap<String, Grant>,
    /// Verifier-plugin grants by plugin name (`default` applies to plugins not named).
    pub plugins: BTreeMap<String, Grant>,
}

/// The grants one stage runs with: defaults merged with the stage's overrides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageGrants {
    pub stage: String,
    pub sandbox: SandboxMode,
    pub read: Vec<PathGrant>,
    pub write: Vec<PathGrant>,
    pub deny: Vec<PathGrant>,
    pub network: Network,
    pub env: Vec<String>,
    pub limits: Limits,
    pub allowlist: Vec<String>,
    pub denylist: Vec<String>,
}

impl Policy {
    /// The built-in default policy.
    pub fn builtin() -> Result<Policy, ConfigError> {
        parse(Path::new("<built-in policy>"), DEFAULT_POLICY)
    }

    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        parse(path, &yaml::read(path)?)
    }

    /// The grant for a plugin: its own entry, else `default`, else read-only access to the
    /// repository and nothing else.
    pub fn for_plugin(&self, name: &str) -> Grant {
        self.plugins
            .get(name)
            .or_else(|| self.plugins.get("default"))
            .cloned()
            .unwrap_or_else(|| Grant {
                read: vec![PathGrant::Root(NamedRoot::Repo)],
                ..Grant::default()
            })
    }

    /// The effective grants of `stage` (one of [`STAGES`]).
    pub fn for_stage(&self, stage: &str) -> StageGrants {
        let mut grants = StageGrants {
            stage: stage.to_string(),
            sandbox: self.sandbox,
            read: self.defaults.read.clone(),
            write: self.defaults.write.clone(),
            deny: self.defaults.deny.clone(),
            network: self.defaults.network.clone().unwrap_or(Network::None),
            env: self.defaults.env.clone(),
            limits: self.defaults.limits.clone(),
            allowlist: self.defaults.allowlist.clone(),
            denylist: self.defaults.denylist.clone(),
        };
        if let Some(over) = self.stages.get(stage) {
            grants.read.extend(over.read.iter().cloned());
            grants.write.extend(over.write.iter().cloned());
            grants.deny.extend(over.deny.iter().cloned());
            if let Some(n) = &over.network {
                grants.network = n.clone();
            }
            grants.env.extend(over.env.iter().cloned());
            grants.limits.overlay(&over.limits);
            grants.allowlist.extend(over.allowlist.iter().cloned());
            grants.denylist.extend(over.denylist.iter().cloned());
        }
        grants
    }
}

/// Parses policy text; `file` is used for messages only.
pub fn parse(file: &Path, text: &str) -> Result<Policy, ConfigError> {
    let root = yaml::parse(file, text)?;
    let top = Field::root(file, &root);
    if !matches!(root.value, yaml::Value::Map(_)) {
        return Err(top.error("top level must be a mapping"));
    }
    let mut policy = Policy {
        source: file.to_path_buf(),
        sandbox: SandboxMode::Enforce,
        defaults: Grant::default(),
        stages: BTreeMap::new(),
        plugins: BTreeMap::new(),
    };
    strict_entries(&top, |key, field| {
        match key {
            "version" => match field.scalar_text()? {
                None | Some("1") => {}
                Some(v) => return Err(field.error(format!("must be 1, got `{v}`"))),
            },
            "sandbox" => {
                policy.sandbox = match field.scalar_text()? {
                    None | Some("enforce") => SandboxMode::Enforce,
                    Some("off") => SandboxMode::Off,
                    Some(v) => {
                        return Err(field.error(format!("must be `enforce` or `off`, got `{v}`")));
                    }
                }
            }
            "defaults" => policy.defaults = parse_grant(&field)?,
            "plugins" => {
                for (name, node) in field.entries()? {
                    policy
                        .plugins
                        .insert(name.clone(), parse_grant(&field.key(name, node))?);
                }
            }
            "stages" => {
                for (name, node) in field.entries()? {
                    let stage = field.key(name, node);
                    if !STAGES.contains(&name.as_str()) {
                        return Err(stage.key_error(format!(
                            "is not a stage; stages are {}",
                            STAGES.join(", ")
                        )));
                    }
                    policy.stages.insert(name.clone(), parse_grant(&stage)?);
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(policy)
}

/// Like `Field::for_each_entry`, but an unknown key is an error: a policy is a security
/// boundary, and a misspelt key must not silently grant more or less than intended.
fn strict_entries<'a>(
    field: &Field<'a>,
    visit: impl FnMut(&str, Field<'a>) -> Result<bool, ConfigError>,
) -> Result<(), ConfigError> {
    let mut unknown = Vec::new();
    let mut visit = visit;
    for (key, node) in field.entries()? {
        let child = field.key(key, node);
        if !visit(key, child.clone())? {
            unknown.push(child.key_error("is not a known key"));
        }
    }
    match unknown.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Parses a grant (`filesystem`, `network`, `env`, `limits`, `commands`); also used for the
/// per-verifier `grants:` of pipeline.yml.
pub fn parse_grant(section: &Field<'_>) -> Result<Grant, ConfigError> {
    let mut grant = Grant::default();
    strict_entries(section, |key, field| {
        match key {
            "filesystem" => strict_entries(&field, |k, f| {
                let list = match k {
                    "read" => &mut grant.read,
                    "write" => &mut grant.write,
                    "deny" => &mut grant.deny,
                    _ => return Ok(false),
                };
                *list = parse_paths(&f)?;
                Ok(true)
            })?,
            "network" => grant.network = Some(parse_network(&field)?),
            "env" => {
                grant.env = field.string_list()?;
                for (i, node) in field.items()?.iter().enumerate() {
                    let name = field.index(i, node);
                    let text = name.non_empty_string()?;
                    let bare = text.strip_suffix('*').unwrap_or(&text);
                    if bare.is_empty()
                        || !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(name
                            .error(format!("must be a variable name or PREFIX_*, got `{text}`")));
                    }
                }
            }
            "limits" => grant.limits = parse_limits(&field)?,
            "commands" => strict_entries(&field, |k, f| {
                match k {
                    "allowlist" => grant.allowlist = f.string_list()?,
                    "denylist" => grant.denylist = f.string_list()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(grant)
}

fn parse_paths(field: &Field<'_>) -> Result<Vec<PathGrant>, ConfigError> {
    let mut out = Vec::new();
    for (i, node) in field.items()?.iter().enumerate() {
        let item = field.index(i, node);
        let text = item.non_empty_string()?;
        if let Some(root) = NamedRoot::parse(&text) {
            out.push(PathGrant::Root(root));
        } else if text.starts_with('/') || text == "~" || text.starts_with("~/") {
            out.push(PathGrant::Path(text));
        } else {
            return Err(item.error(format!(
                "must be a named root (system, toolchains, repo, tmp, artifacts), an absolute path or ~/path; got `{text}`"
            )));
        }
    }
    Ok(out)
}

fn parse_network(field: &Field<'_>) -> Result<Network, ConfigError> {
    if let yaml::Value::Seq(_) = field.node.value {
        let mut hosts = Vec::new();
        for (i, node) in field.items()?.iter().enumerate() {
            let item = field.index(i, node);
            let text = item.non_empty_string()?;
            match HostRule::parse(&text) {
                Some(rule) => hosts.push(rule),
                None => {
                    return Err(item.error(format!(
                        "must be host[:port] or *.domain[:port], got `{text}`"
                    )));
                }
            }
        }
        return Ok(Network::Hosts(hosts));
    }
    match field.scalar_text()? {
        None | Some("none") => Ok(Network::None),
        Some("all") => Ok(Network::All),
        Some(v) => Err(field.error(format!(
            "must be `none`, `all` or a list of host[:port], got `{v}`"
        ))),
    }
}

fn parse_limits(field: &Field<'_>) -> Result<Limits, ConfigError> {
    let mut limits = Limits::default();
    strict_entries(field, |key, f| {
        let whole = |f: &Field<'_>| -> Result<Option<u64>, ConfigError> {
            match f.number()? {
                Some(n) if n < 1.0 || n.fract() != 0.0 => {
                    Err(f.error(format!("must be a whole number >= 1, got `{n}`")))
                }
                Some(n) => Ok(Some(n as u64)),
                None => Ok(None),
            }
        };
        match key {
            "wall_seconds" => limits.wall_seconds = f.non_negative_number()?,
            "memory_mb" => limits.memory_mb = whole(&f)?,
            "processes" => limits.processes = whole(&f)?,
            "file_size_mb" => limits.file_size_mb = whole(&f)?,
            "open_files" => limits.open_files = whole(&f)?,
            "output_bytes" => limits.output_bytes = whole(&f)?,
            "fuel" => limits.fuel = whole(&f)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(limits)
}

/// Whether a variable name looks like a credential: never passed unless granted by exact name.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper == "OPENAI_API_KEY"
        || [
            "_KEY",
            "_TOKEN",
            "_SECRET",
            "_PASSWORD",
            "_PASSWD",
            "_CREDENTIALS",
        ]
        .iter()
        .any(|s| upper.ends_with(s))
        || ["KEY", "TOKEN", "SECRET", "PASSWORD"].contains(&upper.as_str())
}

/// Whether `name` may pass from the runner's environment under these patterns.
pub fn env_allowed(patterns: &[String], name: &str) -> bool {
    if patterns.iter().any(|p| p == name) {
        return true;
    }
    if is_secret_name(name) {
        return false;
    }
    patterns.iter().any(|p| {
        p.strip_suffix('*')
            .is_some_and(|prefix| name.starts_with(prefix))
    })
}

/// The runner's environment filtered by a grant's names.
pub fn filter_env(
    patterns: &[String],
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    vars.into_iter()
        .filter(|(k, _)| env_allowed(patterns, k))
        .collect()
}

#[cfg(test)]
mod tests;
