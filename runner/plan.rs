//! `PLAN.md`: parsing the Next / Backlog / Done sections and creating the plan template.
//!
//! Owns: the rules and the exact error codes of compat §1. Must not: read or write files;
//! callers hand it text and store what it returns.

use std::sync::LazyLock;

use regex::Regex;

/// One `- [ ] (STEP_ID=NNN) text` line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// Kept as written: `001` is not `1`.
    pub id: String,
    pub text: String,
    pub checked: bool,
}

/// What the parser found; `errors` holds compat's error codes in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ParsedPlan {
    pub next: Option<Step>,
    pub backlog: Vec<Step>,
    pub done: Vec<Step>,
    pub errors: Vec<String>,
}

impl ParsedPlan {
    /// Unchecked steps in Backlog.
    pub fn backlog_open_count(&self) -> usize {
        self.backlog.iter().filter(|s| !s.checked).count()
    }

    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

pub const NEXT_HEADING: &str = "## Next";
pub const BACKLOG_HEADING: &str = "## Backlog";
pub const DONE_HEADING: &str = "## Done";

static STEP_LINE: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::expect_used)] // a constant pattern, checked by the tests
    Regex::new(r"^\s*-\s*\[\s*([xX ])\s*\]\s*\(STEP_ID=([0-9]+)\)\s*(.*?)\s*$").expect("step regex")
});

/// Parses one step line, or `None` when the line is not a step line.
pub fn parse_step_line(line: &str) -> Option<Step> {
    let caps = STEP_LINE.captures(line)?;
    Some(Step {
        checked: caps[1].eq_ignore_ascii_case("x"),
        id: caps[2].to_string(),
        text: caps[3].to_string(),
    })
}

/// The lines of the section whose heading starts with `heading`, or `None` when absent.
pub fn section<'a>(text: &'a str, heading: &str) -> Option<Vec<&'a str>> {
    let mut lines = text.lines();
    lines.by_ref().find(|l| l.trim().starts_with(heading))?;
    Some(lines.take_while(|l| !l.trim().starts_with("## ")).collect())
}

/// Steps of a section plus whether it held a bad `- [` line.
fn section_steps(lines: &[&str]) -> (Vec<Step>, bool) {
    let mut steps = Vec::new();
    let mut bad = false;
    for line in lines {
        match parse_step_line(line) {
            Some(step) => steps.push(step),
            None if line.trim_start().starts_with("- [") => bad = true,
            None => {}
        }
    }
    (steps, bad)
}

/// Parses plan text into its steps and compat's error codes.
pub fn parse(text: &str) -> ParsedPlan {
    let mut plan = ParsedPlan::default();
    let mut all_ids: Vec<String> = Vec::new();
    match section(text, NEXT_HEADING) {
        None => plan.errors.push("missing_next_section".into()),
        Some(lines) => {
            let (steps, bad) = section_steps(&lines);
            if bad {
                plan.errors.push("bad_next_line".into());
            }
            if steps.len() > 1 {
                plan.errors.push("next_count_not_one".into());
            }
            if steps.iter().any(|s| s.checked) {
                plan.errors.push("next_is_checked".into());
            }
            all_ids.extend(steps.iter().map(|s| s.id.clone()));
            plan.next = steps.into_iter().next();
        }
    }
    match section(text, BACKLOG_HEADING) {
        None => plan.errors.push("missing_backlog_section".into()),
        Some(lines) => {
            let (steps, bad) = section_steps(&lines);
            if bad {
                plan.errors.push("bad_backlog_line".into());
            }
            all_ids.extend(steps.iter().map(|s| s.id.clone()));
            plan.backlog = steps;
        }
    }
    if let Some(lines) = section(text, DONE_HEADING) {
        let (steps, _) = section_steps(&lines);
        all_ids.extend(steps.iter().map(|s| s.id.clone()));
        plan.done = steps;
    }
    let mut seen = std::collections::HashSet::new();
    if all_ids.iter().any(|id| !seen.insert(id)) {
        plan.errors.push("duplicate_step_id".into());
    }
    plan
}

/// What the template's Acceptance section lists besides the test command.
#[derive(Debug, Clone, Default)]
pub struct TemplateInputs<'a> {
    pub goal: Option<&'a str>,
    pub test_cmd: &'a str,
    pub has_deploy: bool,
    pub has_benchmark: bool,
    pub metrics_path: Option<&'a str>,
}

/// The plan file created when none exists (compat §1).
pub fn template(inputs: &TemplateInputs<'_>) -> String {
    let goal = inputs
        .goal
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .unwrap_or("<fill goal>");
    let mut acceptance = format!("- [ ] TEST_CMD passes: `{}`\n", inputs.test_cmd);
    if inputs.has_deploy {
        acceptance.push_str("- [ ] DEPLOY passes: setup and health commands of pipeline.yml\n");
    }
    if inputs.has_benchmark {
        acceptance.push_str("- [ ] BENCHMARK passes: run commands of pipeline.yml\n");
    }
    if let Some(path) = inputs.metrics_path {
        acceptance.push_str(&format!(
            "- [ ] METRICS valid: `{path}` holds every required key\n"
        ));
    }
    format!(
        "# PLAN\n\n## Goal\n{goal}\n\n## Acceptance\n{acceptance}\n## Next (exactly ONE item)\n\
         - [ ] (STEP_ID=001) Build Backlog: break the goal into the smallest verifiable steps\n\n\
         ## Backlog\n\n## Done\n- [x] (STEP_ID=000) Initialized plan file\n\n## Notes\n"
    )
}

/// How a step leaves Next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing<'a> {
    /// Verified: `- [x]` in Done.
    Done,
    /// Out of fix attempts: `- [x] ... BLOCKED: ...` in Done and the reason under Notes.
    Blocked { reason: &'a str },
}

/// Index range (heading line, end exclusive) of the section whose heading starts with `heading`.
fn section_range(lines: &[String], heading: &str) -> Option<(usize, usize)> {
    let start = lines.iter().position(|l| l.trim().starts_with(heading))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim().starts_with("## "))
        .map_or(lines.len(), |i| start + 1 + i);
    Some((start, end))
}

/// Inserts `new` after the last non-blank line of the section (or right after its heading),
/// creating the section at the end of the file when it is missing.
fn append_to_section(lines: &mut Vec<String>, heading: &str, new: Vec<String>) {
    match section_range(lines, heading) {
        Some((start, end)) => {
            let mut at = end;
            while at > start + 1 && lines[at - 1].trim().is_empty() {
                at -= 1;
            }
            for (i, line) in new.into_iter().enumerate() {
                lines.insert(at + i, line);
            }
        }
        None => {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(heading.to_string());
            lines.extend(new);
        }
    }
}

/// Moves step `id` out of Next into Done (checked) and promotes the first open Backlog step
/// into Next. `None` when Next does not hold that step. Other lines are kept as written.
pub fn close_step(text: &str, id: &str, how: Closing<'_>) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let (next_start, next_end) = section_range(&lines, NEXT_HEADING)?;
    let offset = lines[next_start + 1..next_end]
        .iter()
        .position(|l| parse_step_line(l).is_some_and(|s| s.id == id))?;
    let removed = lines.remove(next_start + 1 + offset);
    let step = parse_step_line(&removed)?;
    if let Some((b_start, b_end)) = section_range(&lines, BACKLOG_HEADING)
        && let Some(i) = lines[b_start + 1..b_end]
            .iter()
            .position(|l| parse_step_line(l).is_some_and(|s| !s.checked))
    {
        let promoted = lines.remove(b_start + 1 + i);
        let trimmed = promoted.trim_start().to_string();
        if let Some((n_start, _)) = section_range(&lines, NEXT_HEADING) {
            lines.insert(n_start + 1, trimmed);
        }
    }
    let done_line = match how {
        Closing::Done => format!("- [x] (STEP_ID={}) {}", step.id, step.text),
        Closing::Blocked { .. } => format!("- [x] (STEP_ID={}) BLOCKED: {}", step.id, step.text),
    };
    append_to_section(&mut lines, DONE_HEADING, vec![done_line]);
    if let Closing::Blocked { reason } = how {
        let mut note = vec![format!("- STEP_ID={} blocked:", step.id)];
        note.extend(reason.lines().map(|l| format!("    {l}")));
        append_to_section(&mut lines, "## Notes", note);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# PLAN\n## Next (exactly ONE item)\n- [ ] (STEP_ID=002) do it\n\n## Backlog\n- [ ] (STEP_ID=003) later\n- [x] (STEP_ID=004) old\n## Done\n- [x] (STEP_ID=001) first\n";

    #[test]
    fn parses_a_good_plan() {
        let plan = parse(GOOD);
        assert!(plan.is_valid(), "{:?}", plan.errors);
        let next = plan.next.clone();
        assert_eq!(
            next.map(|s| (s.id, s.text)),
            Some(("002".into(), "do it".into()))
        );
        assert_eq!(plan.backlog_open_count(), 1);
        assert_eq!(plan.done.len(), 1);
    }

    #[test]
    fn step_ids_keep_leading_zeros() {
        let step = parse_step_line("  - [X] (STEP_ID=001)   text  ");
        assert_eq!(
            step.map(|s| (s.id, s.text, s.checked)),
            Some(("001".into(), "text".into(), true))
        );
        assert_eq!(parse_step_line("- [ ] STEP_ID=1 text"), None);
    }

    #[test]
    fn each_error_code() {
        let cases: &[(&str, &str)] = &[
            ("## Backlog\n", "missing_next_section"),
            ("## Next\n- [ ] nope\n## Backlog\n", "bad_next_line"),
            (
                "## Next\n- [ ] (STEP_ID=1) a\n- [ ] (STEP_ID=2) b\n## Backlog\n",
                "next_count_not_one",
            ),
            (
                "## Next\n- [x] (STEP_ID=1) a\n## Backlog\n",
                "next_is_checked",
            ),
            (
                "## Next\n- [ ] (STEP_ID=1) a\n## Backlog\n- [ ] (STEP_ID=1) b\n",
                "duplicate_step_id",
            ),
            (
                "## Next\n- [ ] (STEP_ID=1) a\n## Backlog\n## Done\n- [x] (STEP_ID=1) b\n",
                "duplicate_step_id",
            ),
            ("## Next\n- [ ] (STEP_ID=1) a\n", "missing_backlog_section"),
            ("## Next\n## Backlog\n- [ ] broken\n", "bad_backlog_line"),
        ];
        for (text, code) in cases {
            let plan = parse(text);
            assert!(
                plan.errors.iter().any(|e| e == code),
                "{code}: {:?}",
                plan.errors
            );
        }
    }

    #[test]
    fn empty_next_is_not_an_error() {
        let plan = parse("## Next (exactly ONE item)\n\n## Backlog\n- [ ] (STEP_ID=5) x\n");
        assert!(plan.is_valid(), "{:?}", plan.errors);
        assert_eq!(plan.next, None);
    }

    #[test]
    fn ids_differing_only_by_zeros_are_distinct() {
        let plan = parse("## Next\n- [ ] (STEP_ID=001) a\n## Backlog\n- [ ] (STEP_ID=1) b\n");
        assert!(plan.is_valid(), "{:?}", plan.errors);
    }

    #[test]
    fn template_parses_and_names_the_test_command() {
        let text = template(&TemplateInputs {
            goal: Some("ship it"),
            test_cmd: "pytest -q",
            has_deploy: true,
            has_benchmark: true,
            metrics_path: Some("m.json"),
        });
        let plan = parse(&text);
        assert!(plan.is_valid(), "{:?}", plan.errors);
        assert_eq!(plan.next.map(|s| s.id), Some("001".into()));
        assert!(text.contains("- [ ] TEST_CMD passes: `pytest -q`"));
        assert!(text.contains("## Goal\nship it"));
        assert!(text.contains("- [x] (STEP_ID=000) Initialized plan file"));
        for heading in [
            "## Acceptance",
            "## Backlog",
            "## Notes",
            "DEPLOY",
            "BENCHMARK",
            "METRICS",
        ] {
            assert!(text.contains(heading), "{heading}");
        }
    }

    #[test]
    fn closing_a_step_promotes_one_backlog_item() {
        let closed = close_step(GOOD, "002", Closing::Done).unwrap_or_default();
        let plan = parse(&closed);
        assert!(plan.is_valid(), "{:?}\n{closed}", plan.errors);
        assert_eq!(plan.next.as_ref().map(|s| s.id.clone()), Some("003".into()));
        assert_eq!(plan.backlog_open_count(), 0);
        assert!(plan.done.iter().any(|s| s.id == "002" && s.checked));
        assert_eq!(close_step(GOOD, "009", Closing::Done), None);
    }

    #[test]
    fn blocking_a_step_records_the_reason() {
        let closed = close_step(
            GOOD,
            "002",
            Closing::Blocked {
                reason: "tests failed\nAssertionError",
            },
        )
        .unwrap_or_default();
        let plan = parse(&closed);
        assert!(plan.is_valid(), "{:?}", plan.errors);
        assert!(
            plan.done
                .iter()
                .any(|s| s.id == "002" && s.text.starts_with("BLOCKED: "))
        );
        assert!(
            closed
                .contains("## Notes\n- STEP_ID=002 blocked:\n    tests failed\n    AssertionError")
        );
    }
}
