//! The one artifact writer.
//!
//! Owns: the layout under `<out_dir>/<run_id>/` and writing every file atomically (a
//! temporary name, then a rename), so a killed run never leaves a half-written artifact.
//! Text is capped at the old tool's 2,000,000 characters. Must not: decide what is written.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The old tool cut text artifacts at this many characters.
pub const TEXT_CAP_CHARS: usize = 2_000_000;

#[derive(Debug, thiserror::Error)]
#[error("cannot write artifact `{path}`: {source}")]
pub struct ArtifactError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A directory of artifacts.
#[derive(Debug, Clone)]
pub struct ArtifactDir {
    root: PathBuf,
}

impl ArtifactDir {
    /// Creates the directory (and its parents).
    pub fn create(root: PathBuf) -> Result<Self, ArtifactError> {
        std::fs::create_dir_all(&root).map_err(|source| ArtifactError {
            path: root.clone(),
            source,
        })?;
        Ok(ArtifactDir { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    pub fn subdir(&self, name: &str) -> Result<ArtifactDir, ArtifactError> {
        ArtifactDir::create(self.root.join(name))
    }

    /// Writes bytes atomically.
    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, ArtifactError> {
        let path = self.root.join(name);
        let tmp = self.root.join(format!(".{name}.tmp{}", std::process::id()));
        let err = |source| ArtifactError {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::create(&tmp).map_err(err)?;
        file.write_all(bytes).map_err(err)?;
        file.sync_data().map_err(err)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(path)
    }

    /// Writes text, cut to [`TEXT_CAP_CHARS`] characters.
    pub fn write_text(&self, name: &str, text: &str) -> Result<PathBuf, ArtifactError> {
        let text = match text.char_indices().nth(TEXT_CAP_CHARS) {
            Some((cut, _)) => &text[..cut],
            None => text,
        };
        self.write_bytes(name, text.as_bytes())
    }

    /// Writes pretty JSON.
    pub fn write_json(
        &self,
        name: &str,
        value: &impl serde::Serialize,
    ) -> Result<PathBuf, ArtifactError> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| ArtifactError {
            path: self.root.join(name),
            source: e.into(),
        })?;
        bytes.push(b'\n');
        self.write_bytes(name, &bytes)
    }
}

impl ArtifactDir {
    /// Appends one JSON line to a log (`O_APPEND`, one `write` per line, then `fsync`), so a
    /// killed run leaves every earlier line whole; a reader skips a torn last line.
    pub fn append_json_line(
        &self,
        name: &str,
        value: &impl serde::Serialize,
    ) -> Result<PathBuf, ArtifactError> {
        let path = self.root.join(name);
        let err = |source| ArtifactError {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(value).map_err(|e| err(e.into()))?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        file.write_all(&line).map_err(err)?;
        file.sync_data().map_err(err)?;
        Ok(path)
    }
}

/// A new run id: UTC time to the second plus the process id, sortable and unique per host.
pub fn new_run_id() -> String {
    format!(
        "{}_{}",
        chrono::Utc::now().format("%Y%m%d_%H%M%S"),
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_caps_text() {
        let tmp = tempfile::tempdir().ok();
        let Some(tmp) = tmp else { panic!("tempdir") };
        let dir = ArtifactDir::create(tmp.path().join("a/b")).ok();
        let Some(dir) = dir else { panic!("create") };
        let long = "é".repeat(TEXT_CAP_CHARS + 5);
        let path = dir.write_text("x.txt", &long).ok();
        let written = path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        assert_eq!(written.chars().count(), TEXT_CAP_CHARS);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(names, vec![std::ffi::OsString::from("x.txt")]);
    }
}
