//! The command rules of compat §3: the old tool's regex filter, kept as a first check.
//!
//! Owns: deciding, from the command text alone, whether a command is refused before it runs,
//! and the exact reason strings users' tooling greps for. Must not: run anything. These rules
//! are easy to get around; the kernel confinement in `sandbox` is what actually protects.

use std::sync::LazyLock;

use regex::Regex;

use crate::pipeline::{Security, SecurityMode};

/// The exit code of a refused command.
pub const REFUSED_RC: i32 = 126;

/// `--unattended`: whether commands may expect a human at the terminal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unattended {
    #[default]
    Strict,
    Guided,
}

/// A user regex; one that does not compile is matched as a literal string.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    regex: Regex,
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        let regex = Regex::new(text).unwrap_or_else(|_| literal(text));
        Pattern {
            text: text.to_string(),
            regex,
        }
    }

    pub fn is_match(&self, cmd: &str) -> bool {
        self.regex.is_match(cmd)
    }
}

fn literal(text: &str) -> Regex {
    #[allow(clippy::expect_used)] // an escaped string is always a valid regex
    Regex::new(&regex::escape(text)).expect("escaped literal")
}

fn patterns(texts: &[&str]) -> Vec<Pattern> {
    texts.iter().map(|t| Pattern::new(t)).collect()
}

/// Always refused, whatever the mode.
static HARD_DENY: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    patterns(&[
        r"\brm\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*(rf|fr)[a-zA-Z]*\s+(-[a-zA-Z]+\s+)*/(\s|$|;|&|\|)",
        r"\brm\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*(rf|fr)[a-zA-Z]*\s+(-[a-zA-Z]+\s+)*/\*",
        r"\brm\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*(rf|fr)[a-zA-Z]*\s+(-[a-zA-Z]+\s+)*~/?(\s|$|;|&|\|)",
        r"\brm\s+(-[a-zA-Z]*\s+)*-[a-zA-Z]*(rf|fr)[a-zA-Z]*\s+(-[a-zA-Z]+\s+)*(\$HOME|\$\{HOME\})/?(\s|$|;|&|\|)",
        r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:",
    ])
});

/// Refused in `safe` mode (the default, and always when there is no pipeline).
static SAFE_DENY: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    patterns(&[
        r"\bsudo\b",
        r"\bbrew\s+uninstall\b",
        r"\bdocker\s+system\s+prune\b",
        r"\bdocker\s+volume\s+prune\b",
        r"\bmkfs(\.[a-z0-9]+)?\b",
        r"\bdd\b",
        r"\bshutdown\b",
        r"\breboot\b",
    ])
});

static DOCKER_LOGIN: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // constant pattern
    Regex::new(r"\bdocker\s+login\b").expect("docker login regex")
});
static DOCKER_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // constant pattern
    Regex::new(r"(\s--password(-stdin)?\b|\s-p\b)").expect("password regex")
});
static GH_LOGIN: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // constant pattern
    Regex::new(r"\bgh\s+auth\s+login\b").expect("gh login regex")
});

/// The rules in force for one run.
#[derive(Debug, Clone)]
pub struct CommandRules {
    mode: SecurityMode,
    has_pipeline: bool,
    allowlist: Vec<Pattern>,
    denylist: Vec<Pattern>,
    unattended: Unattended,
}

impl CommandRules {
    pub fn new(security: Option<&Security>, unattended: Unattended) -> Self {
        let default = Security::default();
        let s = security.unwrap_or(&default);
        CommandRules {
            mode: s.mode,
            has_pipeline: security.is_some(),
            allowlist: s.allowlist.iter().map(|p| Pattern::new(p)).collect(),
            denylist: s.denylist.iter().map(|p| Pattern::new(p)).collect(),
            unattended,
        }
    }

    /// Adds the policy file's patterns to the pipeline's.
    pub fn with_extra(mut self, allowlist: &[String], denylist: &[String]) -> Self {
        self.allowlist
            .extend(allowlist.iter().map(|p| Pattern::new(p)));
        self.denylist
            .extend(denylist.iter().map(|p| Pattern::new(p)));
        self
    }

    pub fn unattended(&self) -> Unattended {
        self.unattended
    }

    /// `Ok` when the command may run, else the compat reason string.
    pub fn check(&self, cmd: &str) -> Result<(), String> {
        let cmd = cmd.trim();
        if cmd.is_empty() {
            return Err("empty_command".into());
        }
        if let Some(p) = HARD_DENY.iter().find(|p| p.is_match(cmd)) {
            return Err(format!("blocked_by_hard_deny: {}", p.text));
        }
        if self.unattended == Unattended::Strict && looks_interactive(cmd) {
            return Err("likely_interactive_command_disallowed_in_strict_mode".into());
        }
        if self.mode == SecurityMode::Safe
            && let Some(p) = SAFE_DENY.iter().find(|p| p.is_match(cmd))
        {
            let code = if self.has_pipeline {
                "blocked_by_denylist"
            } else {
                "blocked_by_default_safe_deny"
            };
            return Err(format!("{code}: {}", p.text));
        }
        if let Some(p) = self.denylist.iter().find(|p| p.is_match(cmd)) {
            return Err(format!("blocked_by_denylist: {}", p.text));
        }
        if !self.allowlist.is_empty() && !self.allowlist.iter().any(|p| p.is_match(cmd)) {
            return Err("blocked_by_allowlist".into());
        }
        Ok(())
    }
}

fn looks_interactive(cmd: &str) -> bool {
    let docker = DOCKER_LOGIN.is_match(cmd) && !DOCKER_PASSWORD.is_match(cmd);
    let gh = GH_LOGIN.is_match(cmd) && !cmd.contains("--with-token");
    docker || gh
}

/// The environment defaults of `--unattended strict`, set unless already present.
pub const STRICT_ENV_DEFAULTS: &[(&str, &str)] = &[
    ("CI", "1"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
    ("PYTHONUNBUFFERED", "1"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(mode: SecurityMode, pipeline: bool) -> CommandRules {
        let security = Security {
            mode,
            ..Security::default()
        };
        CommandRules::new(pipeline.then_some(&security), Unattended::Strict)
    }

    fn reason(rules: &CommandRules, cmd: &str) -> String {
        rules.check(cmd).err().unwrap_or_default()
    }

    #[test]
    fn hard_deny_in_every_mode() {
        for r in [
            rules(SecurityMode::Safe, true),
            rules(SecurityMode::System, true),
        ] {
            for cmd in [
                "rm -rf /",
                "rm -rf /*",
                "rm -rf ~",
                "rm -rf $HOME",
                "echo; rm -fr / ",
                ":(){ :|:& };:",
            ] {
                assert!(
                    reason(&r, cmd).starts_with("blocked_by_hard_deny: "),
                    "{cmd}"
                );
            }
            assert_eq!(r.check("rm -rf ./build"), Ok(()));
            assert_eq!(r.check("rm -rf /tmp/x"), Ok(()));
        }
    }

    #[test]
    fn safe_mode_words() {
        let with = rules(SecurityMode::Safe, true);
        let without = rules(SecurityMode::Safe, false);
        for cmd in [
            "sudo ls",
            "brew uninstall x",
            "docker system prune -f",
            "docker volume prune",
            "mkfs.ext4 /dev/x",
            "dd if=/dev/zero of=x",
            "shutdown now",
            "reboot",
        ] {
            assert!(
                reason(&with, cmd).starts_with("blocked_by_denylist: "),
                "{cmd}"
            );
            assert!(
                reason(&without, cmd).starts_with("blocked_by_default_safe_deny"),
                "{cmd}"
            );
        }
        assert_eq!(with.check("python -m pytest -q"), Ok(()));
        assert_eq!(rules(SecurityMode::System, true).check("sudo ls"), Ok(()));
    }

    #[test]
    fn pipeline_lists() {
        let security = Security {
            allowlist: vec!["^python ".into(), "^pytest".into()],
            denylist: vec!["curl".into(), "([bad".into()],
            ..Security::default()
        };
        let r = CommandRules::new(Some(&security), Unattended::Strict);
        assert_eq!(r.check("python x.py"), Ok(()));
        assert_eq!(reason(&r, "ls"), "blocked_by_allowlist");
        assert_eq!(
            reason(&r, "python x.py | curl -d @- x"),
            "blocked_by_denylist: curl"
        );
        assert_eq!(reason(&r, "python ([bad"), "blocked_by_denylist: ([bad");
        assert_eq!(reason(&r, "   "), "empty_command");
    }

    #[test]
    fn strict_mode_refuses_interactive_logins() {
        let strict = rules(SecurityMode::System, true);
        let code = "likely_interactive_command_disallowed_in_strict_mode";
        assert_eq!(reason(&strict, "docker login registry.io"), code);
        assert_eq!(reason(&strict, "gh auth login"), code);
        assert_eq!(
            strict.check("docker login -u me --password-stdin r.io"),
            Ok(())
        );
        assert_eq!(strict.check("gh auth login --with-token < t"), Ok(()));
        let guided = CommandRules::new(None, Unattended::Guided);
        assert_eq!(guided.check("gh auth login"), Ok(()));
    }
}
