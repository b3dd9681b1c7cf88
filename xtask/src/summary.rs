//! Counting test results from libtest output (`test result: ok. N passed; M failed; ...`).

/// Running totals over any number of test binaries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    /// Adds the figures of one `test result:` line; returns whether the line was one.
    pub fn add_line(&mut self, line: &str) -> bool {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return false;
        };
        let mut parsed = false;
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let n = words
                .iter()
                .rev()
                .nth(1)
                .and_then(|w| w.parse::<u64>().ok());
            match (n, words.last()) {
                (Some(n), Some(&"passed")) => {
                    self.passed += n;
                    parsed = true;
                }
                (Some(n), Some(&"failed")) => self.failed += n,
                (Some(n), Some(&"ignored")) => self.ignored += n,
                _ => {}
            }
        }
        parsed
    }

    pub fn merge(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// Whether `line` is the plain closing line `N passed, N failed` that `cargo xtask test`
/// ends with.
pub fn is_closing_line(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    matches!(
        words.as_slice(),
        [p, "passed,", f, "failed"] if p.parse::<u64>().is_ok() && f.parse::<u64>().is_ok()
    )
}

#[cfg(test)]
mod tests {
    use super::{is_closing_line, Counts};

    #[test]
    fn recognises_the_closing_line() {
        assert!(is_closing_line("187 passed, 0 failed"));
        assert!(!is_closing_line(
            "xtask: host: 1 passed, 0 failed, 0 ignored; VM: 2 passed"
        ));
        assert!(!is_closing_line("x passed, 0 failed"));
    }

    #[test]
    fn parses_libtest_summary_lines() {
        let mut c = Counts::default();
        assert!(c.add_line("test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.69s"));
        assert!(c.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out"
        ));
        assert!(!c.add_line("running 5 tests"));
        assert_eq!(
            c,
            Counts {
                passed: 8,
                failed: 2,
                ignored: 1
            }
        );
    }
}
