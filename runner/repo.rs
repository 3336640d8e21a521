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
}
