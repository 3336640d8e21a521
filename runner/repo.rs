//! The target repository as a capability.
//!
//! Owns: the one way to turn a path named by a pipeline, an action or a model into a place in
//! the repo, always through a `cap_std::fs::Dir` for the repo root, so `..`, absolute paths
//! and symlinks that lead out are refused rather than followed; and the one way the host reads
//! files that untrusted commands produced (never blocking on a FIFO or device, never reading
//! more than a cap). Must not: run commands or decide phase rules.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("repository `{path}` cannot be opened: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{0}` is outside the repository")]
    OutsideRepo(String),
    #[error("`{0}` does not exist")]
    NotFound(String),
    #[error("`{0}` is not a regular file")]
    NotAFile(String),
    #[error("`{0}` is not a directory")]
    NotADirectory(String),
    #[error("`{0}` is protected")]
    Protected(String),
    #[error("cannot clone `{url}` into {dest}: {reason}")]
    Clone {
        url: String,
        dest: PathBuf,
        reason: String,
    },
    #[error("`{0}` is neither an existing directory, a git URL nor `owner/name`")]
    UnknownSource(String),
    #[error("`{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// An open repository root.
#[derive(Debug)]
pub struct Repo {
    root: PathBuf,
    dir: Dir,
}

impl Repo {
    pub fn open(path: &Path) -> Result<Repo, RepoError> {
        let open_err = |source| RepoError::Open {
            path: path.to_path_buf(),
            source,
        };
        let root = std::fs::canonicalize(path).map_err(open_err)?;
        let dir = Dir::open_ambient_dir(&root, cap_std::ambient_authority()).map_err(open_err)?;
        Ok(Repo { root, dir })
    }

    /// The canonical host path of the repo root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Turns a user- or model-supplied path into a normalized path relative to the root.
    /// Absolute paths are accepted only when they lie under the root; `..` may not climb
    /// above it. Symlinks are checked when the path is opened, by `cap_std`.
    pub fn relative(&self, path: &str) -> Result<PathBuf, RepoError> {
        let raw = Path::new(path.trim());
        let rel = if raw.is_absolute() {
            raw.strip_prefix(&self.root)
                .map_err(|_| RepoError::OutsideRepo(path.to_string()))?
        } else {
            raw
        };
        let mut out = PathBuf::new();
        for comp in rel.components() {
            match comp {
                Component::Normal(c) => out.push(c),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !out.pop() {
                        return Err(RepoError::OutsideRepo(path.to_string()));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(RepoError::OutsideRepo(path.to_string()));
                }
            }
        }
        Ok(out)
    }

    /// Maps a cap-std escape refusal to `OutsideRepo`, a missing path to `NotFound`.
    fn classify(path: &str, e: std::io::Error) -> RepoError {
        match e.kind() {
            std::io::ErrorKind::NotFound => RepoError::NotFound(path.to_string()),
            std::io::ErrorKind::PermissionDenied => RepoError::OutsideRepo(path.to_string()),
            _ => RepoError::Io {
                path: path.to_string(),
                source: e,
            },
        }
    }

    /// A working directory for commands: `None` is the root; anything else must be a
    /// directory that resolves inside the repo. Returns the host path to run in.
    pub fn workdir(&self, workdir: Option<&str>) -> Result<PathBuf, RepoError> {
        let Some(workdir) = workdir else {
            return Ok(self.root.clone());
        };
        let rel = self.relative(workdir)?;
        if rel.as_os_str().is_empty() {
            return Ok(self.root.clone());
        }
        let meta = self
            .dir
            .metadata(&rel)
            .map_err(|e| Self::classify(workdir, e))?;
        if !meta.is_dir() {
            return Err(RepoError::NotADirectory(workdir.to_string()));
        }
        // cap-std has checked every symlink on the way; the canonical host path must agree.
        let host =
            std::fs::canonicalize(self.root.join(&rel)).map_err(|e| Self::classify(workdir, e))?;
        if !host.starts_with(&self.root) {
            return Err(RepoError::OutsideRepo(workdir.to_string()));
        }
        Ok(host)
    }

    /// The entries of a directory inside the repo, sorted: (name, is_dir). Symlinks are
    /// listed as files and never followed.
    pub fn list_dir(&self, path: &str) -> Result<Vec<(String, bool)>, RepoError> {
        let rel = self.relative(path)?;
        let rel = if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel
        };
        let entries = self
            .dir
            .read_dir(&rel)
            .map_err(|e| Self::classify(path, e))?;
        let mut out: Vec<(String, bool)> = entries
            .filter_map(Result::ok)
            .map(|e| {
                let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
                (e.file_name().to_string_lossy().into_owned(), is_dir)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Reads at most `cap` bytes of a regular file that untrusted code may have produced.
    /// Returns the bytes and whether the file was longer than the cap. Symlinks out of the
    /// repo, FIFOs, sockets and devices are refused without blocking.
    pub fn read_untrusted(&self, path: &str, cap: usize) -> Result<(Vec<u8>, bool), RepoError> {
        let rel = self.relative(path)?;
        let mut opts = OpenOptions::new();
        opts.read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
        let file = self
            .dir
            .open_with(&rel, &opts)
            .map_err(|e| Self::classify(path, e))?;
        let meta = file.metadata().map_err(|e| Self::classify(path, e))?;
        if !meta.is_file() {
            return Err(RepoError::NotAFile(path.to_string()));
        }
        let mut bytes = Vec::new();
        file.take(cap as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Self::classify(path, e))?;
        let truncated = bytes.len() > cap;
        bytes.truncate(cap);
        Ok((bytes, truncated))
    }
}

/// Paths inside the repo that a writer may not touch: exact files and whole directories,
/// both relative to the root.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
    /// Exceptions inside protected dirs (`.aider_fsm/actions.yml`).
    pub allowed: Vec<PathBuf>,
}

impl Protected {
    /// What commands and writers may never change: the plan, the pipeline, the policy,
    /// `.git/` and the runner's `.aider_fsm/` (except the model's `actions.yml`).
    pub fn standard(repo: &Repo, contract_files: &[&Path]) -> Self {
        let files = contract_files
            .iter()
            .filter_map(|p| {
                let abs = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    repo.root().join(p)
                };
                let canon = std::fs::canonicalize(&abs).unwrap_or(abs);
                canon.strip_prefix(repo.root()).ok().map(Path::to_path_buf)
            })
            .collect();
        Protected {
            files,
            dirs: vec![PathBuf::from(".git"), PathBuf::from(".aider_fsm")],
            allowed: vec![PathBuf::from(".aider_fsm/actions.yml")],
        }
    }

    pub fn covers(&self, rel: &Path) -> bool {
        if self.allowed.iter().any(|a| a == rel) {
            return false;
        }
        self.files.iter().any(|f| f == rel) || self.dirs.iter().any(|d| rel.starts_with(d))
    }
}

impl Repo {
    /// Where a write to `path` would really land, relative to the root: symlinked parent
    /// directories inside the repo are followed (so `docs -> .` cannot smuggle a write to a
    /// protected file), links that lead out are refused.
    pub fn resolve_for_write(&self, path: &str) -> Result<PathBuf, RepoError> {
        let rel = self.relative(path)?;
        let Some(name) = rel.file_name() else {
            return Err(RepoError::NotAFile(path.to_string()));
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        // The deepest existing ancestor decides where the new directories would go.
        let mut existing = parent.to_path_buf();
        let mut missing = Vec::new();
        while !existing.as_os_str().is_empty() && self.dir.symlink_metadata(&existing).is_err() {
            missing.push(
                existing
                    .file_name()
                    .map(|n| n.to_os_string())
                    .unwrap_or_default(),
            );
            existing.pop();
        }
        let host = std::fs::canonicalize(self.root.join(&existing))
            .map_err(|e| Self::classify(path, e))?;
        let mut real = host
            .strip_prefix(&self.root)
            .map_err(|_| RepoError::OutsideRepo(path.to_string()))?
            .to_path_buf();
        real.extend(missing.iter().rev());
        real.push(name);
        Ok(real)
    }

    /// Tools that cache by modification time in whole seconds (make, Python's `.pyc` checks
    /// mtime + size) would miss a same-size rewrite within the second of the last one, so the
    /// new file's mtime is set at least one second past the old file's.
    fn keep_mtime_moving(&self, old: &Path, new: &Path) {
        let Ok(previous) = self.dir.metadata(old).and_then(|m| m.modified()) else {
            return;
        };
        let previous = previous.into_std();
        let now = std::time::SystemTime::now();
        let whole_secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
        };
        if whole_secs(now) > whole_secs(previous) {
            return;
        }
        let bumped = previous + std::time::Duration::from_secs(1);
        if let Ok(file) = self.dir.open(new) {
            let _ = file.into_std().set_modified(bumped);
        }
    }

    /// Writes a file atomically inside the repo, creating parent directories. Refuses paths
    /// that lead out, that are protected, or whose final component is a directory.
    pub fn write_file(
        &self,
        path: &str,
        content: &[u8],
        protected: &Protected,
    ) -> Result<PathBuf, RepoError> {
        let real = self.resolve_for_write(path)?;
        if protected.covers(&real) {
            return Err(RepoError::Protected(path.to_string()));
        }
        let io = |e| Self::classify(path, e);
        if let Some(parent) = real.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.dir.create_dir_all(parent).map_err(io)?;
        }
        let tmp = real.with_file_name(format!(
            ".{}.fsm-tmp{}",
            real.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        self.dir.write(&tmp, content).map_err(io)?;
        self.keep_mtime_moving(&real, &tmp);
        if let Err(e) = self.dir.rename(&tmp, &self.dir, &real) {
            let _ = self.dir.remove_file(&tmp);
            return Err(io(e));
        }
        Ok(real)
    }
}

/// Where `--repo` clones go when `--clone-dir` is not given.
pub fn default_clone_dir() -> PathBuf {
    std::env::temp_dir().join("fsm_runner_targets")
}

/// Turns `--repo` into a local directory: an existing path as is; a git URL (`scheme://...`,
/// `git@host:...`, `*.git`) or `owner/name` (GitHub) shallow-cloned into `clone_dir/<name>`.
/// An existing clone there is reused, so a resumed run finds its state. Returns the
/// directory and whether it was cloned now.
pub fn locate(spec: &str, clone_dir: &Path) -> Result<(PathBuf, bool), RepoError> {
    let as_path = Path::new(spec);
    if as_path.is_dir() {
        return Ok((as_path.to_path_buf(), false));
    }
    let url = if spec.contains("://") || spec.starts_with("git@") || spec.ends_with(".git") {
        spec.to_string()
    } else if is_owner_name(spec) {
        format!("https://github.com/{spec}.git")
    } else {
        return Err(RepoError::UnknownSource(spec.to_string()));
    };
    let name = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .trim_end_matches(".git")
        .to_string();
    let name = if name.is_empty() || name == "." || name == ".." {
        "repo".to_string()
    } else {
        name
    };
    let dest = clone_dir.join(name);
    if dest.join(".git").is_dir() {
        return Ok((dest, false));
    }
    let clone_err = |reason: String| RepoError::Clone {
        url: url.clone(),
        dest: dest.clone(),
        reason,
    };
    std::fs::create_dir_all(clone_dir).map_err(|e| clone_err(e.to_string()))?;
    let shallow = clone(&url, &dest, Some(1));
    if let Err(first) = shallow {
        // Transports without shallow support (the local one, some servers) get a full clone.
        let _ = std::fs::remove_dir_all(&dest);
        clone(&url, &dest, None).map_err(|e| clone_err(format!("{e} (shallow clone: {first})")))?;
    }
    Ok((dest, true))
}

fn clone(url: &str, dest: &Path, depth: Option<i32>) -> Result<git2::Repository, git2::Error> {
    let mut fetch = git2::FetchOptions::new();
    if let Some(depth) = depth {
        fetch.depth(depth);
    }
    git2::build::RepoBuilder::new()
        .fetch_options(fetch)
        .clone(url, dest)
}

fn is_owner_name(spec: &str) -> bool {
    let ok = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(spec.split_once('/'), Some((owner, name)) if ok(owner) && ok(name) && !name.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, Repo) {
        let tmp = match tempfile::tempdir() {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let repo = match Repo::open(tmp.path()) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        (tmp, repo)
    }

    #[test]
    fn relative_refuses_climbing_out() {
        let (_t, repo) = repo();
        assert!(matches!(
            repo.relative("../x"),
            Err(RepoError::OutsideRepo(_))
        ));
        assert!(matches!(
            repo.relative("/etc/passwd"),
            Err(RepoError::OutsideRepo(_))
        ));
        assert_eq!(repo.relative("a/./b/../c").ok(), Some(PathBuf::from("a/c")));
        let inside = repo.root().join("sub").display().to_string();
        assert_eq!(repo.relative(&inside).ok(), Some(PathBuf::from("sub")));
    }

    #[test]
    fn symlink_out_of_repo_is_refused() {
        let (t, repo) = repo();
        let _ = std::os::unix::fs::symlink("/etc/hostname", t.path().join("link"));
        let _ = std::os::unix::fs::symlink("/tmp", t.path().join("dirlink"));
        assert!(matches!(
            repo.read_untrusted("link", 100),
            Err(RepoError::OutsideRepo(_))
        ));
        assert!(matches!(
            repo.workdir(Some("dirlink")),
            Err(RepoError::OutsideRepo(_))
        ));
    }

    #[test]
    fn writes_refuse_protected_paths_even_through_links() {
        let (t, repo) = repo();
        let _ = std::fs::write(t.path().join("PLAN.md"), "plan");
        let _ = std::os::unix::fs::symlink(".", t.path().join("docs"));
        let _ = std::os::unix::fs::symlink("/tmp", t.path().join("out"));
        let protected = Protected {
            files: vec![PathBuf::from("PLAN.md")],
            dirs: vec![PathBuf::from(".git")],
            allowed: vec![],
        };
        for path in [
            "PLAN.md",
            "docs/PLAN.md",
            "./x/../PLAN.md",
            ".git/hooks/pre-commit",
        ] {
            assert!(
                matches!(
                    repo.write_file(path, b"x", &protected),
                    Err(RepoError::Protected(_))
                ),
                "{path}"
            );
        }
        assert!(matches!(
            repo.write_file("out/x", b"x", &protected),
            Err(RepoError::OutsideRepo(_))
        ));
        assert!(matches!(
            repo.write_file("../x", b"x", &protected),
            Err(RepoError::OutsideRepo(_))
        ));
        assert!(
            repo.write_file("new/dir/file.txt", b"hi", &protected)
                .is_ok()
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("new/dir/file.txt"))
                .ok()
                .as_deref(),
            Some("hi")
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("PLAN.md"))
                .ok()
                .as_deref(),
            Some("plan")
        );
    }

    #[test]
    fn reads_are_capped_and_fifos_refused() {
        let (t, repo) = repo();
        let _ = std::fs::write(t.path().join("big"), vec![b'x'; 100]);
        let read = repo.read_untrusted("big", 10).ok();
        assert_eq!(read.map(|(b, trunc)| (b.len(), trunc)), Some((10, true)));
        let fifo =
            std::ffi::CString::new(t.path().join("fifo").display().to_string()).unwrap_or_default();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            repo.read_untrusted("fifo", 10),
            Err(RepoError::NotAFile(_))
        ));
    }

    #[test]
    fn repo_specs() {
        assert!(is_owner_name("evalplus/evalplus"));
        assert!(!is_owner_name("a/b/c"));
        assert!(!is_owner_name("../x"));
        let tmp = match tempfile::tempdir() {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert!(matches!(
            locate("no such thing", tmp.path()),
            Err(RepoError::UnknownSource(_))
        ));
        match locate(&tmp.path().display().to_string(), tmp.path()) {
            Ok((path, cloned)) => assert!(path.is_dir() && !cloned),
            Err(e) => panic!("{e}"),
        }
    }
}
