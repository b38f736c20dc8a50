//! What an import did (or, in a dry run, would do), for people and as JSON.

use serde::Serialize;

/// What became of one thing found in the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Imported by this run.
    Imported,
    /// Imported by an earlier run, and nothing new.
    Unchanged,
    /// molt's own setting differs and was kept.
    Kept,
    /// Not imported; `detail` says why.
    NotImported,
    /// Imported, with something the person should know.
    Note,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// `gateway`, `models`, `agents`, `workspaces`, `sessions`, `cron`, `discord`, `other`.
    pub category: &'static str,
    pub name: String,
    pub status: Status,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Per category counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub imported: usize,
    pub unchanged: usize,
    pub kept: usize,
    pub not_imported: usize,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub source: String,
    pub layout: crate::openclaw::Layout,
    pub dry_run: bool,
    /// molt's config file, and whether this run changed it.
    pub config_file: String,
    pub config_changed: bool,
    pub counts: std::collections::BTreeMap<&'static str, Counts>,
    pub items: Vec<Item>,
    pub next_steps: Vec<String>,
}

impl Report {
    pub(crate) fn count(&mut self) {
        self.counts.clear();
        for i in &self.items {
            let c = self.counts.entry(i.category).or_default();
            match i.status {
                Status::Imported | Status::Note => c.imported += 1,
                Status::Unchanged => c.unchanged += 1,
                Status::Kept => c.kept += 1,
                Status::NotImported => c.not_imported += 1,
            }
        }
    }

    /// The report as text, grouped by category.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run {
            "Dry run: nothing written. Importing"
        } else {
            "Imported"
        };
        out.push_str(&format!(
            "{verb} from {} ({} layout)\n",
            self.source,
            match self.layout {
                crate::openclaw::Layout::Sqlite => "SQLite, 2026.7+",
                crate::openclaw::Layout::Files => "JSON files, before 2026.7",
                crate::openclaw::Layout::ConfigOnly => "config only",
            }
        ));
        for (category, c) in &self.counts {
            out.push_str(&format!(
                "\n{category}: {} new, {} unchanged, {} kept, {} not imported\n",
                c.imported, c.unchanged, c.kept, c.not_imported
            ));
            for i in self.items.iter().filter(|i| i.category == *category) {
                let mark = match i.status {
                    Status::Imported => "+",
                    Status::Unchanged => "=",
                    Status::Kept => "~",
                    Status::NotImported => "!",
                    Status::Note => "+",
                };
                let word = match i.status {
                    Status::Imported | Status::Note => "",
                    Status::Unchanged => " (unchanged)",
                    Status::Kept => " (molt's kept)",
                    Status::NotImported => " (not imported)",
                };
                out.push_str(&format!("  {mark} {}{word}", i.name));
                if !i.detail.is_empty() {
                    out.push_str(&format!(": {}", i.detail));
                }
                out.push('\n');
            }
        }
        out.push_str(&format!(
            "\nmolt config: {} ({})\n",
            self.config_file,
            match (self.config_changed, self.dry_run) {
                (true, true) => "would change",
                (true, false) => "written, 0600",
                (false, _) => "unchanged",
            }
        ));
        if !self.next_steps.is_empty() {
            out.push_str("\nNext steps:\n");
            for (n, s) in self.next_steps.iter().enumerate() {
                out.push_str(&format!("  {}. {s}\n", n + 1));
            }
        }
        out
    }
}
