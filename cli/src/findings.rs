//! What every check of the plugin reports: a [`Finding`] with a [`Severity`], what was checked,
//! what is wrong in words, and what to do. Shared by `trace`, `doctor` and `migrate` so the text
//! and JSON outputs look alike. No logic beyond formatting.

use serde::Serialize;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Checked and fine.
    Ok,
    /// Worth knowing; not a fault.
    Info,
    /// Likely to cause trouble, or a partial fault.
    Warning,
    /// Broken: traffic does not get through, or two implementations fight.
    Error,
}

impl Severity {
    /// Lower case, for text output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }
}

/// One result of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// Which check, stable for scripts (`pool-overlaps-service-cidr`).
    pub check: String,
    /// What was found, one line.
    pub title: String,
    /// Why it matters, in words.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub explanation: String,
    /// What to do, when something must be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A finding without explanation or fix.
    pub fn new(severity: Severity, check: &str, title: impl Into<String>) -> Self {
        Self {
            severity,
            check: check.to_string(),
            title: title.into(),
            explanation: String::new(),
            fix: None,
        }
    }

    /// With an explanation.
    #[must_use]
    pub fn because(mut self, why: impl Into<String>) -> Self {
        self.explanation = why.into();
        self
    }

    /// With what to do.
    #[must_use]
    pub fn fix(mut self, what: impl Into<String>) -> Self {
        self.fix = Some(what.into());
        self
    }

    /// Indented text: `[error] title`, then explanation and fix lines.
    pub fn render(&self, indent: &str) -> String {
        let mut s = format!("{indent}[{}] {}\n", self.severity.as_str(), self.title);
        if !self.explanation.is_empty() {
            s.push_str(&format!("{indent}    {}\n", self.explanation));
        }
        if let Some(f) = &self.fix {
            s.push_str(&format!("{indent}    what to do: {f}\n"));
        }
        s
    }
}

/// The worst severity in a list (`Ok` for none).
pub fn worst(findings: &[Finding]) -> Severity {
    findings
        .iter()
        .map(|f| f.severity)
        .max()
        .unwrap_or(Severity::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_ranks() {
        let f = Finding::new(Severity::Error, "x", "broken")
            .because("because")
            .fix("do this");
        assert_eq!(
            f.render("  "),
            "  [error] broken\n      because\n      what to do: do this\n"
        );
        assert_eq!(
            worst(&[Finding::new(Severity::Info, "a", "a"), f]),
            Severity::Error
        );
        assert_eq!(worst(&[]), Severity::Ok);
    }
}
