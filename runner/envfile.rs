//! `.env` files, read the way the old tool read them.
//!
//! Owns: parsing `KEY=value` lines (comments, `export ` prefix, single or double quotes) and
//! merging them into the runner's environment where variables already set win unless the
//! caller asks to override. Must not: decide which variables commands see; the policy does.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct EnvFileError {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// Parses `.env` text into pairs, in file order.
pub fn parse(path: &Path, text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut pairs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            return Err(EnvFileError {
                path: path.display().to_string(),
                line: i + 1,
                message: "expected KEY=value".into(),
            });
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(EnvFileError {
                path: path.display().to_string(),
                line: i + 1,
                message: format!("`{key}` is not a valid variable name"),
            });
        }
        pairs.push((key.to_string(), unquote(value.trim())));
    }
    Ok(pairs)
}

fn unquote(value: &str) -> String {
    for q in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
            let inner = &value[1..value.len() - 1];
            return if q == '"' {
                inner.replace("\\n", "\n").replace("\\\"", "\"")
            } else {
                inner.to_string()
            };
        }
    }
    // An unquoted value ends at an inline comment.
    match value.find(" #") {
        Some(i) => value[..i].trim_end().to_string(),
        None => value.to_string(),
    }
}

/// Loads `path` when it exists and sets its variables in this process's environment.
/// Returns the names that were set. A missing file is not an error.
pub fn load(path: &Path, override_existing: bool) -> Result<Vec<String>, EnvFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(EnvFileError {
                path: path.display().to_string(),
                line: 0,
                message: e.to_string(),
            });
        }
    };
    let mut set = Vec::new();
    for (key, value) in parse(path, &text)? {
        if override_existing || std::env::var_os(&key).is_none() {
            // SAFETY: called from the CLI edge before any thread is started.
            unsafe { std::env::set_var(&key, value) };
            set.push(key);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let text = "# c\nA=1\nexport B = two \nC=\"x y\"\nD='q # r'\nE=v # note\n\nF=\n";
        let pairs = parse(Path::new(".env"), text).unwrap_or_default();
        let want: Vec<(String, String)> = [
            ("A", "1"),
            ("B", "two"),
            ("C", "x y"),
            ("D", "q # r"),
            ("E", "v"),
            ("F", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(pairs, want);
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let err = parse(Path::new("x/.env"), "A=1\nnope\n")
            .err()
            .map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("x/.env:2: expected KEY=value"));
    }
}
