//! What `check` found, grouped so a message that is the same for several samples is said once.

/// What `check` found. Exit 1 when `problems` is not empty.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
    /// What went well and is worth saying (`check --online`: a key that works).
    pub notes: Vec<String>,
    /// One line about what was checked.
    pub summary: String,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The text printed by `sekoia-relay check`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&format!("error: {p}\n"));
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("ok: {n}\n"));
        }
        out.push_str(&format!(
            "{}: {} problem(s), {} warning(s){}\n",
            if self.ok() { "ok" } else { "FAILED" },
            self.problems.len(),
            self.warnings.len(),
            if self.summary.is_empty() {
                String::new()
            } else {
                format!(" — {}", self.summary)
            }
        ));
        out
    }
}

/// A problem found on one sample: a message that is the same whatever the sample (so it can
/// be reported once) and an optional sample-specific detail (shown for the first sample).
pub(super) struct Finding {
    pub(super) message: String,
    pub(super) detail: Option<String>,
}

impl From<String> for Finding {
    fn from(message: String) -> Self {
        Finding {
            message,
            detail: None,
        }
    }
}

/// The same message for several samples is reported once, with the list of samples.
#[derive(Default)]
pub(super) struct Grouped {
    items: Vec<(Finding, Vec<String>)>,
}

impl Grouped {
    pub(super) fn add(&mut self, finding: Finding, sample: &str) {
        match self
            .items
            .iter_mut()
            .find(|(f, _)| f.message == finding.message)
        {
            Some((_, samples)) => samples.push(sample.to_string()),
            None => self.items.push((finding, vec![sample.to_string()])),
        }
    }

    pub(super) fn into_lines(self, total: usize) -> Vec<String> {
        self.items
            .into_iter()
            .map(|(f, s)| {
                let which = if s.len() == total {
                    "every sample".to_string()
                } else {
                    format!("sample: {}", s.join(", "))
                };
                match f.detail {
                    Some(d) => format!("{} [{which}]\n    {}: {d}", f.message, s[0]),
                    None => format!("{} [{which}]", f.message),
                }
            })
            .collect()
    }
}
