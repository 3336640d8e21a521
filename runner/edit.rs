//! The edit protocol: SEARCH/REPLACE blocks in a model's reply, parsed and applied to the
//! repository all-or-nothing, under the rules of the current phase.
//!
//! Owns: parsing blocks (path line, fence, `<<<<<<< SEARCH` / `=======` / `>>>>>>> REPLACE`),
//! matching (exact first, then ignoring trailing whitespace, then a uniform indentation
//! offset), refusing missing or ambiguous matches with the closest lines, and checking every
//! target path against the phase before anything is written. Must not: write except through
//! `Repo::write_file`, or trust any path in a reply.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::repo::{Protected, Repo, RepoError};

/// One block: replace `search` with `replace` in `path` (an empty `search` creates the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditBlock {
    pub path: String,
    pub search: String,
    pub replace: String,
}

/// Why a reply could not be applied; the message goes back to the model as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error(
        "block {block}: no file path before the block (put the path alone on the line before the fence)"
    )]
    MissingPath { block: usize },
    #[error("block {block}: unterminated block (expected `{expected}`)")]
    Unterminated {
        block: usize,
        expected: &'static str,
    },
    #[error("block {block} (`{path}`): {reason}")]
    Refused {
        block: usize,
        path: String,
        reason: String,
    },
    #[error("block {block} (`{path}`): the SEARCH text was not found{closest}")]
    NotFound {
        block: usize,
        path: String,
        closest: String,
    },
    #[error(
        "block {block} (`{path}`): the SEARCH text matches {count} places; include more lines to make it unique"
    )]
    Ambiguous {
        block: usize,
        path: String,
        count: usize,
    },
    #[error("writing `{path}` failed: {reason}")]
    Write { path: String, reason: String },
}

const SEARCH: &str = "<<<<<<< SEARCH";
const DIVIDER: &str = "=======";
const REPLACE: &str = ">>>>>>> REPLACE";

fn is_fence(line: &str) -> bool {
    line.trim_start().starts_with("```")
}

/// Parses every block of a reply. A block's path is the last non-empty, non-fence line before
/// its `<<<<<<< SEARCH` (or the previous block's path when blocks follow each other).
pub fn parse_blocks(reply: &str) -> Result<Vec<EditBlock>, EditError> {
    let lines: Vec<&str> = reply.lines().collect();
    let mut blocks: Vec<EditBlock> = Vec::new();
    let mut i = 0;
    let mut last_text_line: Option<&str> = None;
    while i < lines.len() {
        let line = lines[i];
        if line.trim() != SEARCH {
            if !line.trim().is_empty() && !is_fence(line) {
                last_text_line = Some(line.trim());
            }
            i += 1;
            continue;
        }
        let number = blocks.len() + 1;
        let path = match last_text_line.take() {
            Some(p) => clean_path(p),
            None => blocks
                .last()
                .map(|b| b.path.clone())
                .ok_or(EditError::MissingPath { block: number })?,
        };
        let (search, next) =
            collect_until(&lines, i + 1, DIVIDER).ok_or(EditError::Unterminated {
                block: number,
                expected: DIVIDER,
            })?;
        let (replace, next) =
            collect_until(&lines, next, REPLACE).ok_or(EditError::Unterminated {
                block: number,
                expected: REPLACE,
            })?;
        blocks.push(EditBlock {
            path,
            search,
            replace,
        });
        i = next;
    }
    Ok(blocks)
}

/// Strips decorations models put around a path line (`**a.py**`, `` `a.py` ``, `a.py:`).
fn clean_path(line: &str) -> String {
    line.trim()
        .trim_matches(|c: char| c == '*' || c == '`' || c == '#' || c == ':' || c.is_whitespace())
        .to_string()
}

/// Lines from `start` up to the `end` marker, joined; returns the text and the index after it.
fn collect_until(lines: &[&str], start: usize, end: &str) -> Option<(String, usize)> {
    let stop = (start..lines.len()).find(|&j| lines[j].trim() == end)?;
    let mut text = lines[start..stop].join("\n");
    if stop > start {
        text.push('\n');
    }
    Some((text, stop + 1))
}

/// Which paths a phase may write, as real paths relative to the repo root.
pub enum PhaseRule<'a> {
    /// The plan phase: only the plan file.
    OnlyPlan(PathBuf),
    /// Execute and fix: anything not protected.
    AllExcept(&'a Protected),
}

impl PhaseRule<'_> {
    fn check(&self, real: &std::path::Path) -> Result<(), String> {
        match self {
            PhaseRule::OnlyPlan(plan) if real == plan => Ok(()),
            PhaseRule::OnlyPlan(plan) => Err(format!(
                "the plan phase may only change `{}`",
                plan.display()
            )),
            PhaseRule::AllExcept(protected) if protected.covers(real) => Err(format!(
                "`{}` is protected in this phase (the plan, the pipeline, the policy, .git/ and .aider_fsm/ except actions.yml)",
                real.display()
            )),
            PhaseRule::AllExcept(_) => Ok(()),
        }
    }
}

/// Applies a reply's blocks: every path is checked and every match found in memory first;
/// only then is anything written. Returns the files written.
pub fn apply(
    repo: &Repo,
    blocks: &[EditBlock],
    rule: &PhaseRule<'_>,
) -> Result<Vec<PathBuf>, EditError> {
    let mut files: BTreeMap<PathBuf, (String, String)> = BTreeMap::new();
    for (i, block) in blocks.iter().enumerate() {
        let number = i + 1;
        let refused = |reason: String| EditError::Refused {
            block: number,
            path: block.path.clone(),
            reason,
        };
        let real = repo
            .resolve_for_write(&block.path)
            .map_err(|e| refused(describe(&e)))?;
        rule.check(&real).map_err(refused)?;
        let current = match files.get(&real) {
            Some((_, text)) => Some(text.clone()),
            None => read_existing(repo, &real).map_err(refused)?,
        };
        let updated = match (current, block.search.is_empty()) {
            (None, true) => block.replace.clone(),
            (None, false) => {
                return Err(refused(
                    "the file does not exist (an empty SEARCH creates a file)".into(),
                ));
            }
            (Some(text), true) if text.is_empty() => block.replace.clone(),
            (Some(_), true) => {
                return Err(refused(
                    "the file already exists; use a SEARCH block to change it".into(),
                ));
            }
            (Some(text), false) => {
                replace_once(&text, &block.search, &block.replace).map_err(|e| match e {
                    Miss::NotFound(closest) => EditError::NotFound {
                        block: number,
                        path: block.path.clone(),
                        closest,
                    },
                    Miss::Ambiguous(count) => EditError::Ambiguous {
                        block: number,
                        path: block.path.clone(),
                        count,
                    },
                })?
            }
        };
        files.insert(real, (block.path.clone(), updated));
    }
    let mut written = Vec::new();
    for (real, (_, text)) in &files {
        let rel = real.display().to_string();
        repo.write_file(&rel, text.as_bytes(), &Protected::default())
            .map_err(|e| EditError::Write {
                path: rel.clone(),
                reason: e.to_string(),
            })?;
        written.push(real.clone());
    }
    Ok(written)
}

fn describe(e: &RepoError) -> String {
    match e {
        RepoError::OutsideRepo(p) => format!("`{p}` leads outside the repository"),
        other => other.to_string(),
    }
}

fn read_existing(repo: &Repo, real: &std::path::Path) -> Result<Option<String>, String> {
    match repo.read_untrusted(&real.display().to_string(), 16 * 1024 * 1024) {
        Ok((bytes, false)) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| "the file is not UTF-8 text".into()),
        Ok((_, true)) => Err("the file is too large to edit".into()),
        Err(RepoError::NotFound(_)) => Ok(None),
        Err(e) => Err(describe(&e)),
    }
}

enum Miss {
    NotFound(String),
    Ambiguous(usize),
}

/// Replaces the one place `search` occurs: exactly, else ignoring trailing whitespace, else
/// with a uniform indentation offset (the replacement is re-indented by the same offset).
fn replace_once(text: &str, search: &str, replace: &str) -> Result<String, Miss> {
    match text.matches(search).count() {
        1 => return Ok(text.replacen(search, replace, 1)),
        n if n > 1 => return Err(Miss::Ambiguous(n)),
        _ => {}
    }
    let file: Vec<&str> = text.split_inclusive('\n').collect();
    let wanted: Vec<&str> = search.lines().collect();
    if wanted.is_empty() {
        return Err(Miss::NotFound(String::new()));
    }
    let windows = file.len().saturating_sub(wanted.len()) + 1;
    let same_trimmed = |start: usize| {
        (0..wanted.len()).all(|k| file[start + k].trim_end() == wanted[k].trim_end())
    };
    let hits: Vec<usize> = (0..windows).filter(|&s| same_trimmed(s)).collect();
    if hits.len() > 1 {
        return Err(Miss::Ambiguous(hits.len()));
    }
    if let Some(&start) = hits.first() {
        return Ok(splice(&file, start, wanted.len(), replace, ""));
    }
    let hits: Vec<(usize, String)> = (0..windows)
        .filter_map(|s| indent_offset(&file[s..s + wanted.len()], &wanted).map(|pad| (s, pad)))
        .collect();
    match hits.as_slice() {
        [(start, pad)] => Ok(splice(&file, *start, wanted.len(), replace, pad)),
        [] => Err(Miss::NotFound(closest(&file, &wanted))),
        many => Err(Miss::Ambiguous(many.len())),
    }
}

/// The whitespace every file line has in front of its search line, if it is the same for all.
fn indent_offset(window: &[&str], wanted: &[&str]) -> Option<String> {
    let mut pad: Option<String> = None;
    for (have, want) in window.iter().zip(wanted) {
        let (have, want) = (have.trim_end(), want.trim_end());
        if want.is_empty() {
            if !have.trim().is_empty() {
                return None;
            }
            continue;
        }
        let prefix = have.strip_suffix(want.trim_start())?;
        let want_indent = &want[..want.len() - want.trim_start().len()];
        let extra = prefix.strip_suffix(want_indent).unwrap_or(prefix);
        if !extra.chars().all(char::is_whitespace) || !prefix.ends_with(want_indent) {
            return None;
        }
        match &pad {
            Some(p) if p != extra => return None,
            _ => pad = Some(extra.to_string()),
        }
    }
    pad
}

fn splice(file: &[&str], start: usize, len: usize, replace: &str, pad: &str) -> String {
    let mut out: String = file[..start].concat();
    for line in replace.split_inclusive('\n') {
        if !line.trim().is_empty() {
            out.push_str(pad);
        }
        out.push_str(line);
    }
    if !replace.is_empty() && !replace.ends_with('\n') && start + len < file.len() {
        out.push('\n');
    }
    out.push_str(&file[start + len..].concat());
    out
}

/// The lines of the file most like the search, with line numbers, for the model.
fn closest(file: &[&str], wanted: &[&str]) -> String {
    let windows = file.len().saturating_sub(wanted.len()) + 1;
    let score = |s: usize| {
        (0..wanted.len())
            .filter(|&k| s + k < file.len() && file[s + k].trim() == wanted[k].trim())
            .count()
    };
    let Some(best) = (0..windows).max_by_key(|&s| (score(s), usize::MAX - s)) else {
        return String::new();
    };
    if score(best) == 0 {
        return String::new();
    }
    let shown: Vec<String> = (best..(best + wanted.len()).min(file.len()))
        .map(|n| format!("{:>5} | {}", n + 1, file[n].trim_end_matches('\n')))
        .collect();
    format!("; the closest lines are:\n{}", shown.join("\n"))
}

#[cfg(test)]
mod tests;
