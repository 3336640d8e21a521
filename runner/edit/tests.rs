use std::path::{Path, PathBuf};

use super::*;

fn repo_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Repo) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (path, text) in files {
        let p = tmp.path().join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(p, text).unwrap_or_else(|e| panic!("{e}"));
    }
    let repo = Repo::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
    (tmp, repo)
}

fn read(tmp: &tempfile::TempDir, path: &str) -> String {
    std::fs::read_to_string(tmp.path().join(path)).unwrap_or_default()
}

fn block(path: &str, search: &str, replace: &str) -> String {
    format!("{path}\n```python\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n```\n")
}

fn protected() -> Protected {
    Protected {
        files: vec![PathBuf::from("PLAN.md"), PathBuf::from("pipeline.yml")],
        dirs: vec![PathBuf::from(".git"), PathBuf::from(".aider_fsm")],
        allowed: vec![PathBuf::from(".aider_fsm/actions.yml")],
    }
}

fn apply_reply(repo: &Repo, reply: &str) -> Result<Vec<PathBuf>, EditError> {
    let p = protected();
    apply(repo, &parse_blocks(reply)?, &PhaseRule::AllExcept(&p))
}

#[test]
fn parses_paths_fences_and_several_blocks() {
    let reply = format!(
        "Here is the fix.\n\n**src/a.py**\n```python\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n<<<<<<< SEARCH\ny = 1\n=======\ny = 2\n>>>>>>> REPLACE\n```\n{}",
        block("`b.py`:", "", "new\n")
    );
    let blocks = parse_blocks(&reply).unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(&str, &str, &str)> = blocks
        .iter()
        .map(|b| (b.path.as_str(), b.search.as_str(), b.replace.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("src/a.py", "x = 1\n", "x = 2\n"),
            ("src/a.py", "y = 1\n", "y = 2\n"),
            ("b.py", "", "new\n")
        ]
    );
}

#[test]
fn malformed_blocks_are_named() {
    assert_eq!(
        parse_blocks("<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n"),
        Err(EditError::MissingPath { block: 1 })
    );
    assert_eq!(
        parse_blocks("a.py\n<<<<<<< SEARCH\na\n=======\nb\n"),
        Err(EditError::Unterminated {
            block: 1,
            expected: REPLACE
        })
    );
    assert_eq!(parse_blocks("no blocks here"), Ok(Vec::new()));
}

#[test]
fn exact_match_replaces_once() {
    let (tmp, repo) = repo_with(&[("a.py", "def f():\n    return 1\n\nprint(f())\n")]);
    apply_reply(&repo, &block("a.py", "    return 1\n", "    return 2\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&tmp, "a.py"), "def f():\n    return 2\n\nprint(f())\n");
}

#[test]
fn trailing_whitespace_is_tolerated() {
    let (tmp, repo) = repo_with(&[("a.py", "x = 1   \ny = 2\n")]);
    apply_reply(&repo, &block("a.py", "x = 1\ny = 2\n", "x = 10\ny = 20\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&tmp, "a.py"), "x = 10\ny = 20\n");
}

#[test]
fn a_uniform_indentation_offset_is_tolerated_and_kept() {
    let (tmp, repo) = repo_with(&[("a.py", "class C:\n    def f(self):\n        return 1\n")]);
    let reply = block(
        "a.py",
        "def f(self):\n    return 1\n",
        "def f(self):\n    return 42\n",
    );
    apply_reply(&repo, &reply).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        read(&tmp, "a.py"),
        "class C:\n    def f(self):\n        return 42\n"
    );
}

#[test]
fn missing_and_ambiguous_matches_are_refused_with_reasons() {
    let (_tmp, repo) = repo_with(&[("a.py", "a = 1\nb = 2\nc = 3\nb = 2\n")]);
    let err = apply_reply(&repo, &block("a.py", "b = 2\n", "b = 3\n")).err();
    assert!(
        matches!(err, Some(EditError::Ambiguous { count: 2, .. })),
        "{err:?}"
    );
    let err = apply_reply(&repo, &block("a.py", "a = 1\nb = 9\n", "x\n"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("was not found; the closest lines are:\n    1 | a = 1\n    2 | b = 2"),
        "{err}"
    );
}

#[test]
fn empty_search_creates_a_file_but_not_over_an_existing_one() {
    let (tmp, repo) = repo_with(&[("old.py", "keep\n")]);
    apply_reply(&repo, &block("pkg/new.py", "", "print('hi')\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&tmp, "pkg/new.py"), "print('hi')\n");
    let err = apply_reply(&repo, &block("old.py", "", "x\n")).err();
    assert!(matches!(err, Some(EditError::Refused { .. })), "{err:?}");
    assert_eq!(read(&tmp, "old.py"), "keep\n");
}

#[test]
fn a_reply_is_applied_all_or_nothing() {
    let (tmp, repo) = repo_with(&[("a.py", "a = 1\n"), ("b.py", "b = 1\n")]);
    let reply = format!(
        "{}{}",
        block("a.py", "a = 1\n", "a = 2\n"),
        block("b.py", "nope\n", "b = 2\n")
    );
    assert!(apply_reply(&repo, &reply).is_err());
    assert_eq!(read(&tmp, "a.py"), "a = 1\n");
    // Two blocks on one file apply in order.
    let reply = format!(
        "{}{}",
        block("a.py", "a = 1\n", "a = 2\n"),
        block("a.py", "a = 2\n", "a = 3\n")
    );
    apply_reply(&repo, &reply).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&tmp, "a.py"), "a = 3\n");
}

#[test]
fn execute_phase_refuses_protected_files_and_escapes() {
    let (tmp, repo) = repo_with(&[
        ("PLAN.md", "plan\n"),
        ("pipeline.yml", "tests: {}\n"),
        (".git/config", "[core]\n"),
        ("ok.py", "x\n"),
    ]);
    let _ = std::os::unix::fs::symlink("/tmp", tmp.path().join("out"));
    let _ = std::os::unix::fs::symlink(".", tmp.path().join("docs"));
    for path in [
        "PLAN.md",
        "pipeline.yml",
        ".git/config",
        ".aider_fsm/state.json",
        "docs/PLAN.md",
        "out/x.py",
        "../x.py",
        "/etc/passwd",
    ] {
        let err = apply_reply(&repo, &block(path, "", "pwned\n")).err();
        assert!(
            matches!(err, Some(EditError::Refused { .. })),
            "{path}: {err:?}"
        );
    }
    assert_eq!(read(&tmp, "PLAN.md"), "plan\n");
    apply_reply(&repo, &block(".aider_fsm/actions.yml", "", "version: 1\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(Path::new(&tmp.path().join(".aider_fsm/actions.yml")).exists());
}

#[test]
fn plan_phase_writes_only_the_plan() {
    let (tmp, repo) = repo_with(&[("PLAN.md", "## Next\n"), ("a.py", "x\n")]);
    let rule = PhaseRule::OnlyPlan(PathBuf::from("PLAN.md"));
    let blocks = parse_blocks(&block("a.py", "x\n", "y\n")).unwrap_or_default();
    let err = apply(&repo, &blocks, &rule)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("the plan phase may only change `PLAN.md`"),
        "{err}"
    );
    let blocks = parse_blocks(&block(
        "PLAN.md",
        "## Next\n",
        "## Next\n- [ ] (STEP_ID=001) go\n",
    ))
    .unwrap_or_default();
    apply(&repo, &blocks, &rule).unwrap_or_else(|e| panic!("{e}"));
    assert!(read(&tmp, "PLAN.md").contains("STEP_ID=001"));
    assert_eq!(read(&tmp, "a.py"), "x\n");
}
