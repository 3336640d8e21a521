//! The backstop after every phase: whatever changed outside the phase's allowed set (by a
//! command, say, or anything the edit rules missed) is put back and reported.
//!
//! Owns: snapshots of the work tree as git tree objects (git2, respecting .gitignore) and
//! of the protected files by content (so the guard works without git), and restoring from
//! them. Must not: decide what a phase may change (callers pass that in), or touch the
//! repository's index, HEAD or refs: snapshots only add objects to its object store.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::repo::{Protected, Repo, RepoError};

/// Protected files larger than this are compared but cannot be restored from memory.
const WATCH_CAP: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("git snapshot of {path}: {source}")]
    Git { path: PathBuf, source: git2::Error },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// What a snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    WorkTree,
    Protected,
}

/// The state of the tree before a phase.
pub struct Snapshot {
    tree: Option<git2::Oid>,
    watched: Vec<(PathBuf, Option<Vec<u8>>)>,
}

/// One path put back.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Restored {
    pub path: PathBuf,
    /// `restored` (content put back) or `removed` (the file did not exist before).
    pub action: &'static str,
    /// `git` or `hash`.
    pub by: &'static str,
}

pub struct Guard<'r> {
    repo: &'r Repo,
    git: Option<git2::Repository>,
    /// Files checked by content, relative to the root.
    watched: Vec<PathBuf>,
    /// The runner's own folders (state, logs, artifacts): never hashed into a snapshot, which
    /// would grow with every run and fill the repo's object store with artifacts.
    skipped: Vec<PathBuf>,
}

impl<'r> Guard<'r> {
    /// `watched`: files checked by content whether or not git is there (the plan, the
    /// pipeline, the policy). `.git/config` and `.git/HEAD` are added when the repo has git.
    /// `skipped`: folders left out of tree snapshots, relative to the root.
    pub fn new(repo: &'r Repo, watched: &[PathBuf], skipped: &[PathBuf]) -> Self {
        // Only the repo's own .git: never search upwards into an enclosing repository.
        let git = git2::Repository::open_ext(
            repo.root(),
            git2::RepositoryOpenFlags::NO_SEARCH,
            std::iter::empty::<&std::ffi::OsStr>(),
        )
        .ok()
        .filter(|g| !g.is_bare())
        // The repo's config may name another work tree; the guard only ever looks at this one.
        .and_then(|g| g.set_workdir(repo.root(), false).ok().map(|()| g));
        let mut all: Vec<PathBuf> = watched.to_vec();
        if git.is_some() {
            all.push(PathBuf::from(".git/config"));
            all.push(PathBuf::from(".git/HEAD"));
        }
        Guard {
            repo,
            git,
            watched: all,
            skipped: skipped.to_vec(),
        }
    }

    pub fn has_git(&self) -> bool {
        self.git.is_some()
    }

    /// `Scope::WorkTree` for phases that may change only a few named paths (the plan phase):
    /// the whole tree is snapshotted. `Scope::Protected` for phases that may change everything
    /// but the protected paths (execute, verify): the protected files are kept by content, and
    /// the other protected paths (`.git/`, `.aider_fsm/`) are not in a git tree anyway, so a
    /// tree snapshot could find nothing more to restore.
    pub fn snapshot(&self, scope: Scope) -> Result<Snapshot, GuardError> {
        let tree = match (&self.git, scope) {
            (Some(git), Scope::WorkTree) => Some(self.work_tree(git)?),
            _ => None,
        };
        let watched = self
            .watched
            .iter()
            .map(|rel| {
                let content = self
                    .repo
                    .read_untrusted(&rel.to_string_lossy(), WATCH_CAP)
                    .ok()
                    .map(|(bytes, _)| bytes);
                (rel.clone(), content)
            })
            .collect();
        Ok(Snapshot { tree, watched })
    }

    /// The work tree (tracked and untracked, not ignored) as a tree object.
    fn work_tree(&self, git: &git2::Repository) -> Result<git2::Oid, GuardError> {
        let err = |source| GuardError::Git {
            path: self.repo.root().to_path_buf(),
            source,
        };
        let mut index = git.index().map_err(err)?;
        index.read(true).map_err(err)?;
        // 0 adds the path, 1 skips it.
        let mut skip =
            |path: &Path, _: &[u8]| i32::from(self.skipped.iter().any(|s| path.starts_with(s)));
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, Some(&mut skip))
            .map_err(err)?;
        index.update_all(["*"], Some(&mut skip)).map_err(err)?;
        let tree = index.write_tree().map_err(err)?;
        // Leave the in-memory index as the file on disk says: the snapshot is not staging.
        index.read(true).map_err(err)?;
        Ok(tree)
    }

    /// Changed files and a diff stat against HEAD, for the snapshot the model sees.
    pub fn status_report(&self, max_lines: usize) -> String {
        let Some(git) = &self.git else {
            return "(not a git repository: changes are guarded by content hashes only)".into();
        };
        let mut out = String::new();
        if let Ok(head) = git.head()
            && let Ok(commit) = head.peel_to_commit()
        {
            let id = commit.id().to_string();
            out.push_str(&format!(
                "HEAD {} {}\n",
                &id[..id.len().min(10)],
                commit.summary().unwrap_or_default()
            ));
        }
        let mut options = git2::StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(false);
        let Ok(statuses) = git.statuses(Some(&mut options)) else {
            return out;
        };
        let mut lines = Vec::new();
        for entry in statuses.iter() {
            let status = entry.status();
            let code = if status.is_wt_new() || status.is_index_new() {
                "??"
            } else if status.is_wt_deleted() || status.is_index_deleted() {
                " D"
            } else {
                " M"
            };
            if let Some(path) = entry.path() {
                lines.push(format!("{code} {path}"));
            }
        }
        if lines.is_empty() {
            out.push_str("working tree clean\n");
        } else {
            let total = lines.len();
            for line in lines.into_iter().take(max_lines) {
                out.push_str(&line);
                out.push('\n');
            }
            if total > max_lines {
                out.push_str(&format!("... and {} more\n", total - max_lines));
            }
            if let Some(stat) = diff_stat(git) {
                out.push_str(&stat);
            }
        }
        out
    }

    /// Puts back every change since `before` whose path `allowed` rejects.
    pub fn restore_outside(
        &self,
        before: &Snapshot,
        allowed: &dyn Fn(&Path) -> bool,
    ) -> Result<Vec<Restored>, GuardError> {
        let mut restored = Vec::new();
        if let (Some(git), Some(old)) = (&self.git, before.tree) {
            let new = self.work_tree(git)?;
            if new != old {
                self.restore_from_git(git, old, new, allowed, &mut restored)?;
            }
        }
        for (rel, content) in &before.watched {
            if allowed(rel) {
                continue;
            }
            let name = rel.to_string_lossy();
            let now = self
                .repo
                .read_untrusted(&name, WATCH_CAP)
                .ok()
                .map(|(b, _)| b);
            if &now == content {
                continue;
            }
            match content {
                Some(bytes) => {
                    self.repo.write_file(&name, bytes, &Protected::default())?;
                    restored.push(Restored {
                        path: rel.clone(),
                        action: "restored",
                        by: "hash",
                    });
                }
                None => {
                    let _ = self.repo.dir().remove_file(rel);
                    restored.push(Restored {
                        path: rel.clone(),
                        action: "removed",
                        by: "hash",
                    });
                }
            }
        }
        Ok(restored)
    }

    fn restore_from_git(
        &self,
        git: &git2::Repository,
        old: git2::Oid,
        new: git2::Oid,
        allowed: &dyn Fn(&Path) -> bool,
        restored: &mut Vec<Restored>,
    ) -> Result<(), GuardError> {
        let err = |source| GuardError::Git {
            path: self.repo.root().to_path_buf(),
            source,
        };
        let old_tree = git.find_tree(old).map_err(err)?;
        let new_tree = git.find_tree(new).map_err(err)?;
        let diff = git
            .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)
            .map_err(err)?;
        for delta in diff.deltas() {
            let Some(rel) = delta
                .new_file()
                .path()
                .or_else(|| delta.old_file().path())
                .map(Path::to_path_buf)
            else {
                continue;
            };
            if allowed(&rel) || self.watched.contains(&rel) {
                continue;
            }
            let name = rel.to_string_lossy().to_string();
            if delta.status() == git2::Delta::Added {
                let _ = self.repo.dir().remove_file(&rel);
                restored.push(Restored {
                    path: rel,
                    action: "removed",
                    by: "git",
                });
                continue;
            }
            let blob = git.find_blob(delta.old_file().id()).map_err(err)?;
            self.repo
                .write_file(&name, blob.content(), &Protected::default())?;
            restored.push(Restored {
                path: rel,
                action: "restored",
                by: "git",
            });
        }
        Ok(())
    }
}

/// ` N files changed, X insertions(+), Y deletions(-)` of the work tree against HEAD.
fn diff_stat(git: &git2::Repository) -> Option<String> {
    let head = git.head().ok()?.peel_to_tree().ok()?;
    let diff = git
        .diff_tree_to_workdir_with_index(Some(&head), None)
        .ok()?;
    let stats = diff.stats().ok()?;
    let buf = stats.to_buf(git2::DiffStatsFormat::SHORT, 80).ok()?;
    buf.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with_git() -> (tempfile::TempDir, Repo) {
        let tmp = match tempfile::tempdir() {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = git2::Repository::init(tmp.path()) {
            panic!("{e}");
        }
        for (name, text) in [
            ("a.py", "print('a')\n"),
            ("PLAN.md", "# PLAN\n"),
            (".gitignore", "build/\n"),
        ] {
            if let Err(e) = std::fs::write(tmp.path().join(name), text) {
                panic!("{e}");
            }
        }
        let repo = match Repo::open(tmp.path()) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        (tmp, repo)
    }

    #[test]
    fn changes_outside_the_allowed_set_are_put_back_from_the_git_snapshot() {
        let (tmp, repo) = repo_with_git();
        let guard = Guard::new(&repo, &[], &[PathBuf::from(".aider_fsm")]);
        assert!(guard.has_git());
        let before = match guard.snapshot(Scope::WorkTree) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let write = |name: &str, text: &str| {
            let path = tmp.path().join(name);
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            if let Err(e) = std::fs::write(path, text) {
                panic!("{e}");
            }
        };
        write("a.py", "print('changed')\n");
        write("new.py", "x = 1\n");
        write("PLAN.md", "# PLAN\n- allowed change\n");
        write("build/out.txt", "ignored by .gitignore\n");
        write(".aider_fsm/logs/run.jsonl", "the runner's own\n");
        let only_plan = |rel: &Path| rel == Path::new("PLAN.md");
        let restored = match guard.restore_outside(&before, &only_plan) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let read = |name: &str| std::fs::read_to_string(tmp.path().join(name)).ok();
        assert_eq!(read("a.py").as_deref(), Some("print('a')\n"));
        assert_eq!(read("new.py"), None);
        assert_eq!(
            read("PLAN.md").as_deref(),
            Some("# PLAN\n- allowed change\n")
        );
        assert!(
            read("build/out.txt").is_some(),
            "ignored files are not the guard's"
        );
        let mut paths: Vec<_> = restored
            .iter()
            .map(|r| (r.path.clone(), r.action))
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                (PathBuf::from("a.py"), "restored"),
                (PathBuf::from("new.py"), "removed")
            ]
        );
        // The snapshot staged nothing: the index on disk is still empty.
        let git = match git2::Repository::open(tmp.path()) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(git.index().map(|i| i.len()).unwrap_or(99), 0);
    }

    #[test]
    fn without_git_watched_files_are_checked_by_content() {
        let tmp = match tempfile::tempdir() {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = std::fs::write(tmp.path().join("pipeline.yml"), "version: 1\n") {
            panic!("{e}");
        }
        let repo = match Repo::open(tmp.path()) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let guard = Guard::new(&repo, &[PathBuf::from("pipeline.yml")], &[]);
        assert!(!guard.has_git());
        let before = match guard.snapshot(Scope::WorkTree) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        if let Err(e) = std::fs::write(tmp.path().join("pipeline.yml"), "tests: {cmds: [true]}\n") {
            panic!("{e}");
        }
        let restored = match guard.restore_outside(&before, &|_| false) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(restored.len(), 1);
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("pipeline.yml"))
                .ok()
                .as_deref(),
            Some("version: 1\n")
        );
    }
}
