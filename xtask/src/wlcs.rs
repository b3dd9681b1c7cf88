//! The WLCS step of `cargo xtask test`: the Wayland conformance suite (Debian package
//! `wlcs`) over the reference compositor, through the `wlcs_syncbridge` module.
//!
//! The runner (a gtest program) writes its results as JSON; each test is passed,
//! failed, or skipped (WLCS skips a test that needs a protocol the compositor does not
//! advertise, see `wlcs_syncbridge/src/extensions.rs`). The step prints the counts per
//! test group (gtest suite) and fails when a test fails that
//! `wlcs_syncbridge/expected-failures.txt` does not list; an expected failure that
//! passes, or an entry that names no test, is printed as a note.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd::{target_dir, workspace_root};

/// Where Debian installs the runner: `/usr/lib/<triplet>/wlcs/wlcs`.
pub const RUNNER_IN_LIBDIR: &str = "wlcs/wlcs";

/// The whole suite takes well under this; a hang beyond it is killed and reported.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// The expected failures, relative to the workspace root.
pub const EXPECTED_FAILURES: &str = "wlcs_syncbridge/expected-failures.txt";

/// One test's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    Skipped,
}

/// Counts of one group.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupCounts {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
}

impl GroupCounts {
    fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Passed => self.passed += 1,
            Verdict::Failed => self.failed += 1,
            Verdict::Skipped => self.skipped += 1,
        }
    }

    fn merge(&mut self, other: GroupCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }
}

/// What the step found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per gtest suite.
    pub groups: BTreeMap<String, GroupCounts>,
    /// Failed tests that the expected-failure list does not name.
    pub unexpected: Vec<String>,
    /// Listed tests that passed.
    pub now_passing: Vec<String>,
    /// List entries that matched no test that ran.
    pub stale: Vec<String>,
    /// Wall time of the runner.
    pub secs: f64,
}

impl Outcome {
    pub fn total(&self) -> GroupCounts {
        let mut total = GroupCounts::default();
        for counts in self.groups.values() {
            total.merge(*counts);
        }
        total
    }
}

/// The runner, if installed.
pub fn runner() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(RUNNER_IN_LIBDIR))
        .find(|p| p.is_file())
}

/// The integration module cargo builds (`cargo build -p wlcs_syncbridge`).
pub fn module() -> PathBuf {
    target_dir().join("debug/libwlcs_syncbridge.so")
}

/// Runs the suite (or the tests matching the gtest `filter`) and judges the result
/// against the expected-failure list. Prints the table.
pub fn run(filter: Option<&str>) -> Result<Outcome> {
    let runner = runner()
        .with_context(|| format!("no /usr/lib/<arch>/{RUNNER_IN_LIBDIR} (Debian package wlcs)"))?;
    let module = module();
    if !module.is_file() {
        bail!(
            "{} is missing (cargo build -p wlcs_syncbridge)",
            module.display()
        );
    }
    let dir = target_dir().join("wlcs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("results.json");
    let log = dir.join("wlcs.log");
    let _ = std::fs::remove_file(&json);

    println!(
        "xtask: test: WLCS ({} {}{}), log in {}",
        runner.display(),
        module.display(),
        filter
            .map(|f| format!(" --gtest_filter={f}"))
            .unwrap_or_default(),
        log.display()
    );
    let t = Instant::now();
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(&runner);
    cmd.arg(&module)
        .arg(format!("--gtest_output=json:{}", json.display()))
        .arg("--gtest_color=no")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().context("dup log fd")?)
        .stderr(log_file);
    if let Some(filter) = filter {
        cmd.arg(format!("--gtest_filter={filter}"));
    }
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for wlcs")? {
            break status;
        }
        if t.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "wlcs ran longer than {}s and was killed; last test started: {}",
                RUN_TIMEOUT.as_secs(),
                last_started(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let secs = t.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&json).with_context(|| {
        format!(
            "wlcs ended ({status}) without results in {}; last test started: {}",
            json.display(),
            last_started(&log).unwrap_or_default()
        )
    })?;
    let results = parse_results(&text)?;
    let expected_path = workspace_root().join(EXPECTED_FAILURES);
    let expected_text = std::fs::read_to_string(&expected_path)
        .with_context(|| format!("reading {}", expected_path.display()))?;
    let expected = parse_expected(&expected_text);
    let mut outcome = judge(&results, &expected);
    outcome.secs = secs;
    print(&outcome);
    if results.is_empty() {
        bail!("wlcs ran no test ({status})");
    }
    Ok(outcome)
}

/// `(suite, full test name, verdict)` of every test that ran, from gtest's JSON.
pub fn parse_results(json: &str) -> Result<Vec<(String, String, Verdict)>> {
    let doc: serde_json::Value = serde_json::from_str(json).context("parsing wlcs's JSON")?;
    let mut out = Vec::new();
    for suite in doc["testsuites"].as_array().into_iter().flatten() {
        let suite_name = suite["name"].as_str().unwrap_or("?");
        for test in suite["testsuite"].as_array().into_iter().flatten() {
            if test["status"].as_str() == Some("NOTRUN") {
                continue;
            }
            let name = format!("{suite_name}.{}", test["name"].as_str().unwrap_or("?"));
            // WLCS marks a test that needs an unadvertised protocol with this property
            // (and a failure, which its own listener hides).
            let verdict = if test.get("wlcs-skip-test").is_some()
                || test["result"].as_str() == Some("SKIPPED")
            {
                Verdict::Skipped
            } else if test["failures"].as_array().is_some_and(|f| !f.is_empty()) {
                Verdict::Failed
            } else {
                Verdict::Passed
            };
            out.push((suite_name.to_string(), name, verdict));
        }
    }
    Ok(out)
}

/// The expected-failure list: `TEST_NAME reason...` per line, `#` comments; `*` in a
/// name matches any run of characters.
pub fn parse_expected(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((name, reason)) => (name.to_string(), reason.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// Whether `name` matches `pattern` (`*` matches any run of characters).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    if !name.ends_with(last) {
        return false;
    }
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

fn judge(results: &[(String, String, Verdict)], expected: &[(String, String)]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut used = vec![false; expected.len()];
    for (suite, name, verdict) in results {
        outcome
            .groups
            .entry(suite.clone())
            .or_default()
            .add(*verdict);
        let listed = expected
            .iter()
            .position(|(pattern, _)| glob_match(pattern, name));
        if let Some(i) = listed {
            used[i] = true;
        }
        match (verdict, listed) {
            (Verdict::Failed, None) => outcome.unexpected.push(name.clone()),
            (Verdict::Passed, Some(_)) => outcome.now_passing.push(name.clone()),
            _ => {}
        }
    }
    outcome.stale = expected
        .iter()
        .zip(used)
        .filter(|(_, used)| !used)
        .map(|((pattern, _), _)| pattern.clone())
        .collect();
    outcome
}

fn print(outcome: &Outcome) {
    let width = outcome
        .groups
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "xtask: WLCS per group:\n  {:<width$} {:>6} {:>6} {:>7}",
        "group", "passed", "failed", "skipped"
    );
    for (group, c) in &outcome.groups {
        println!(
            "  {group:<width$} {:>6} {:>6} {:>7}",
            c.passed, c.failed, c.skipped
        );
    }
    let total = outcome.total();
    println!(
        "  {:<width$} {:>6} {:>6} {:>7}",
        "total", total.passed, total.failed, total.skipped
    );
    for name in &outcome.unexpected {
        println!("xtask: WLCS: UNEXPECTED FAILURE: {name} (not in {EXPECTED_FAILURES})");
    }
    for name in &outcome.now_passing {
        println!("xtask: WLCS: note: expected failure now passes: {name} (remove it from {EXPECTED_FAILURES})");
    }
    for pattern in &outcome.stale {
        println!(
            "xtask: WLCS: note: {EXPECTED_FAILURES} entry matches no test that ran: {pattern}"
        );
    }
    println!(
        "xtask: WLCS: {} passed, {} failed ({} expected, {} unexpected), {} skipped in {:.1}s",
        total.passed,
        total.failed,
        total.failed - outcome.unexpected.len() as u64,
        outcome.unexpected.len(),
        total.skipped,
        outcome.secs
    );
}

/// The name of the last `[ RUN      ]` test in the log.
fn last_started(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("[ RUN      ] "))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("A.b", "A.b"));
        assert!(!glob_match("A.b", "A.bc"));
        assert!(glob_match("A/*", "A/B.c"));
        assert!(glob_match("*Touch*", "X/TouchTest.d"));
        assert!(!glob_match("*Touch*", "X/Pointer.d"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn verdicts_from_gtest_json() {
        let json = r#"{"testsuites": [
            {"name": "S", "testsuite": [
                {"name": "ok", "status": "RUN", "result": "COMPLETED"},
                {"name": "bad", "status": "RUN", "result": "COMPLETED",
                 "failures": [{"failure": "x", "type": ""}]},
                {"name": "skip", "status": "RUN", "result": "COMPLETED",
                 "failures": [{"failure": "x", "type": ""}], "wlcs-skip-test": "no foo"},
                {"name": "gskip", "status": "RUN", "result": "SKIPPED"},
                {"name": "off", "status": "NOTRUN", "result": "SUPPRESSED"}
            ]}]}"#;
        let r = parse_results(json).expect("parses");
        let v: Vec<(&str, Verdict)> = r.iter().map(|(_, n, v)| (n.as_str(), *v)).collect();
        assert_eq!(
            v,
            [
                ("S.ok", Verdict::Passed),
                ("S.bad", Verdict::Failed),
                ("S.skip", Verdict::Skipped),
                ("S.gskip", Verdict::Skipped)
            ]
        );
    }

    #[test]
    fn judges_against_the_list() {
        let results = vec![
            ("S".to_string(), "S.a".to_string(), Verdict::Failed),
            ("S".to_string(), "S.b".to_string(), Verdict::Failed),
            ("T".to_string(), "T.c".to_string(), Verdict::Passed),
            ("T".to_string(), "T.d".to_string(), Verdict::Skipped),
        ];
        let expected = parse_expected("# c\nS.a  needs foo\nT.*  reason\nU.x gone\n");
        assert_eq!(expected[0], ("S.a".to_string(), "needs foo".to_string()));
        let o = judge(&results, &expected);
        assert_eq!(o.unexpected, ["S.b"]);
        assert_eq!(o.now_passing, ["T.c"]);
        assert_eq!(o.stale, ["U.x"]);
        assert_eq!(
            o.total(),
            GroupCounts {
                passed: 1,
                failed: 2,
                skipped: 1
            }
        );
    }
}
