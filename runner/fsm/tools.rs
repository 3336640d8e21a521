//! Read-only tools for models that can call them (`--read-tools`): read a file, list a
//! directory, search with a regex. They let the model look before it edits.
//!
//! Owns: the tool definitions and their answers. Must not: write anything, or reach a path
//! except through `Repo` (so `..`, absolute paths and symlinks out are refused as for edits).

use std::path::Path;

use serde_json::{Value, json};

use crate::llm::ToolHost;
use crate::repo::Repo;

/// Caps on what one answer may carry back into the conversation.
const READ_CAP: usize = 64 * 1024;
const LIST_CAP: usize = 500;
const SEARCH_MATCHES: usize = 100;
const SEARCH_FILES: usize = 5000;
const SEARCH_FILE_BYTES: usize = 1 << 20;
/// The runner's own folders are not the model's to browse.
const HIDDEN: &[&str] = &[".git", ".aider_fsm"];

pub struct RepoTools<'r> {
    pub repo: &'r Repo,
}

impl ToolHost for RepoTools<'_> {
    fn definitions(&self) -> Value {
        let function = |name: &str, description: &str, parameters: Value| json!({"type": "function", "function": {"name": name, "description": description, "parameters": parameters}});
        json!([
            function(
                "read_file",
                "Read a text file of the repository (relative path); optional 1-based line range.",
                json!({"type": "object", "properties": {
                    "path": {"type": "string"},
                    "start_line": {"type": "integer"},
                    "end_line": {"type": "integer"}
                }, "required": ["path"]})
            ),
            function(
                "list_dir",
                "List a directory of the repository (relative path; \".\" is the root).",
                json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})
            ),
            function(
                "search",
                "Search the repository's text files for a regular expression; returns path:line: text.",
                json!({"type": "object", "properties": {
                    "pattern": {"type": "string"},
                    "path": {"type": "string"}
                }, "required": ["pattern"]})
            ),
        ])
    }

    fn call(&self, name: &str, arguments: &str) -> String {
        let args: Value = match serde_json::from_str(arguments) {
            Ok(v) => v,
            Err(e) => return format!("error: the arguments are not JSON: {e}"),
        };
        let text = |key: &str| args[key].as_str().map(str::to_string);
        let result = match name {
            "read_file" => match text("path") {
                Some(path) => self.read_file(
                    &path,
                    args["start_line"].as_u64(),
                    args["end_line"].as_u64(),
                ),
                None => Err("`path` is required".into()),
            },
            "list_dir" => self.list_dir(&text("path").unwrap_or_else(|| ".".into())),
            "search" => match text("pattern") {
                Some(pattern) => self.search(&pattern, &text("path").unwrap_or_else(|| ".".into())),
                None => Err("`pattern` is required".into()),
            },
            other => Err(format!(
                "unknown tool `{other}`; the tools are read_file, list_dir, search"
            )),
        };
        result.unwrap_or_else(|e| format!("error: {e}"))
    }
}

impl RepoTools<'_> {
    fn hidden(rel: &Path) -> bool {
        rel.components()
            .next()
            .is_some_and(|c| HIDDEN.iter().any(|h| c.as_os_str() == *h))
    }

    fn read_file(
        &self,
        path: &str,
        start: Option<u64>,
        end: Option<u64>,
    ) -> Result<String, String> {
        let rel = self.repo.relative(path).map_err(|e| e.to_string())?;
        if Self::hidden(&rel) {
            return Err(format!("`{path}` belongs to the runner"));
        }
        let (bytes, truncated) = self
            .repo
            .read_untrusted(path, READ_CAP)
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&bytes);
        let first = start.unwrap_or(1).max(1) as usize;
        let last = end.map_or(usize::MAX, |e| e as usize);
        let mut out: String = text
            .lines()
            .enumerate()
            .filter(|(i, _)| (first..=last).contains(&(i + 1)))
            .map(|(_, line)| format!("{line}\n"))
            .collect();
        if truncated {
            out.push_str(&format!(
                "[... the file is longer than {READ_CAP} bytes ...]\n"
            ));
        }
        Ok(out)
    }

    fn list_dir(&self, path: &str) -> Result<String, String> {
        let entries = self.repo.list_dir(path).map_err(|e| e.to_string())?;
        let total = entries.len();
        let mut out: Vec<String> = entries
            .into_iter()
            .filter(|(name, _)| !HIDDEN.contains(&name.as_str()) || path.trim() != ".")
            .take(LIST_CAP)
            .map(|(name, dir)| if dir { format!("{name}/") } else { name })
            .collect();
        if total > LIST_CAP {
            out.push(format!("... and {} more", total - LIST_CAP));
        }
        Ok(out.join("\n"))
    }

    fn search(&self, pattern: &str, path: &str) -> Result<String, String> {
        let regex = regex::Regex::new(pattern).map_err(|e| format!("bad pattern: {e}"))?;
        let start = self.repo.relative(path).map_err(|e| e.to_string())?;
        let mut pending = vec![start];
        let mut matches = Vec::new();
        let mut files = 0;
        while let Some(dir) = pending.pop() {
            let name = dir.to_string_lossy().to_string();
            let listed = if name.is_empty() { "." } else { name.as_str() };
            let Ok(entries) = self.repo.list_dir(listed) else {
                continue;
            };
            for (entry, is_dir) in entries {
                let rel = dir.join(&entry);
                if Self::hidden(&rel) {
                    continue;
                }
                if is_dir {
                    pending.push(rel);
                    continue;
                }
                files += 1;
                if files > SEARCH_FILES || matches.len() >= SEARCH_MATCHES {
                    return Ok(finish(matches, true));
                }
                let Ok((bytes, _)) = self
                    .repo
                    .read_untrusted(&rel.to_string_lossy(), SEARCH_FILE_BYTES)
                else {
                    continue;
                };
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    continue;
                };
                for (i, line) in text.lines().enumerate() {
                    if regex.is_match(line) {
                        matches.push(format!("{}:{}: {}", rel.display(), i + 1, line.trim_end()));
                        if matches.len() >= SEARCH_MATCHES {
                            break;
                        }
                    }
                }
            }
        }
        Ok(finish(matches, false))
    }
}

fn finish(matches: Vec<String>, cut: bool) -> String {
    if matches.is_empty() {
        return "no matches".into();
    }
    let mut out = matches.join("\n");
    if cut {
        out.push_str("\n[... more matches not shown ...]");
    }
    out
}
