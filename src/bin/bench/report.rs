//! Results: every number with its unit, the ratios against distribution (and nginx), the
//! targets (src/bin/bench/targets.rs) as evaluated, and their rendering as JSON and as
//! Markdown tables.

use std::collections::BTreeMap;

use serde::Serialize;

pub const DISTRIBUTION: &str = "distribution";
pub const EMBEDDED: &str = "embedded";
pub const KUBO: &str = "kubo";
pub const NODE: &str = "ipfs-node";
pub const NGINX: &str = "nginx";
/// Column order of the table.
pub const COLUMNS: [&str; 5] = [EMBEDDED, KUBO, DISTRIBUTION, NGINX, NODE];

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// One measured quantity across the systems measured.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub metric: String,
    pub unit: &'static str,
    pub better: Better,
    /// System → value (medians for throughputs).
    pub values: BTreeMap<String, f64>,
    /// System → every sample behind the value, when there are several.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub samples: BTreeMap<String, Vec<f64>>,
}

/// A target as evaluated on a run.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: String,
    /// The measured value (a ratio for ratio targets), when both sides were measured.
    pub value: Option<f64>,
    pub bound: f64,
    /// The value as shown, with what it came from; or why there is none.
    pub measured: String,
    /// `None`: not measured.
    pub met: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: BTreeMap<String, String>,
    pub settings: BTreeMap<String, String>,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    /// Systems left out of this run, and why (what a target that needs them says).
    pub skipped: BTreeMap<String, String>,
    /// Phases cut short or left out, and why.
    pub notes: Vec<String>,
    pub duration_s: f64,
}

impl Report {
    pub fn set(
        &mut self,
        metric: &str,
        unit: &'static str,
        better: Better,
        system: &str,
        value: f64,
    ) {
        self.row(metric, unit, better)
            .values
            .insert(system.to_owned(), value);
    }

    pub fn set_samples(
        &mut self,
        metric: &str,
        unit: &'static str,
        system: &str,
        samples: Vec<f64>,
    ) {
        let value = crate::stats::median(&samples);
        let row = self.row(metric, unit, Better::Higher);
        row.values.insert(system.to_owned(), value);
        row.samples.insert(system.to_owned(), samples);
    }

    fn row(&mut self, metric: &str, unit: &'static str, better: Better) -> &mut Row {
        let index = match self.rows.iter().position(|r| r.metric == metric) {
            Some(index) => index,
            None => {
                self.rows.push(Row {
                    metric: metric.to_owned(),
                    unit,
                    better,
                    values: BTreeMap::new(),
                    samples: BTreeMap::new(),
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[index]
    }

    pub fn value(&self, metric: &str, system: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.metric == metric)
            .and_then(|r| r.values.get(system).copied())
            .filter(|v| v.is_finite())
    }

    /// Makes sure `metric`'s row exists (rows keep the order they are first seen in).
    pub fn declare(&mut self, metric: &str, unit: &'static str, better: Better) {
        self.row(metric, unit, better);
    }

    pub fn markdown(&self) -> String {
        let systems: Vec<&str> = COLUMNS
            .iter()
            .copied()
            .filter(|s| self.rows.iter().any(|r| r.values.contains_key(*s)))
            .collect();
        let ours: Vec<&str> = [EMBEDDED, KUBO]
            .into_iter()
            .filter(|s| systems.contains(s))
            .collect();
        let with_distribution = systems.contains(&DISTRIBUTION);
        // The limit: what a static file server does with the same bytes.
        let with_nginx = systems.contains(&NGINX) && systems.contains(&EMBEDDED);
        let mut out = String::new();
        out.push_str("| metric | unit |");
        for s in &systems {
            out.push_str(&format!(" {s} |"));
        }
        if with_distribution {
            for s in &ours {
                out.push_str(&format!(" {s} / distribution |"));
            }
        }
        if with_nginx {
            out.push_str(" embedded / nginx |");
        }
        out.push('\n');
        let columns = 2
            + systems.len()
            + if with_distribution { ours.len() } else { 0 }
            + usize::from(with_nginx);
        out.push_str(&"|---".repeat(columns));
        out.push_str("|\n");
        for row in &self.rows {
            let arrow = match row.better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            out.push_str(&format!("| {} | {} {arrow} |", row.metric, row.unit));
            for s in &systems {
                match row.values.get(*s) {
                    Some(v) => out.push_str(&format!(" {} |", number(*v))),
                    None => out.push_str(" |"),
                }
            }
            let ratio = |a: &str, b: &str| match (row.values.get(a), row.values.get(b)) {
                (Some(a), Some(b)) if *b > 0.0 && a.is_finite() => format!(" {:.2}x |", a / b),
                _ => " |".to_owned(),
            };
            if with_distribution {
                for s in &ours {
                    out.push_str(&ratio(s, DISTRIBUTION));
                }
            }
            if with_nginx {
                out.push_str(&ratio(EMBEDDED, NGINX));
            }
            out.push('\n');
        }
        if !self.targets.is_empty() {
            out.push_str("\n| target | measured | met |\n|---|---|---|\n");
            for t in &self.targets {
                let met = match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "not measured",
                };
                out.push_str(&format!("| {} | {} | {met} |\n", t.target, t.measured));
            }
        }
        for note in &self.notes {
            out.push_str(&format!("\n- {note}"));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        out
    }
}

/// A value as the tables show it: three significant digits or so.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        "–".to_owned()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_against_distribution_and_nginx() {
        let mut report = Report::default();
        report.set("push", "MB/s", Better::Higher, EMBEDDED, 300.0);
        report.set("push", "MB/s", Better::Higher, DISTRIBUTION, 200.0);
        report.set("push", "MB/s", Better::Higher, KUBO, 50.0);
        let table = report.markdown();
        assert!(
            table.contains("| push | MB/s ↑ | 300 | 50.0 | 200 | 1.50x | 0.25x |"),
            "{table}"
        );
        assert_eq!(report.value("push", KUBO), Some(50.0));
        assert_eq!(report.value("x", EMBEDDED), None);
        report.set("pull", "MB/s", Better::Higher, NGINX, 400.0);
        report.set("pull", "MB/s", Better::Higher, EMBEDDED, 200.0);
        let table = report.markdown();
        assert!(
            table.contains("| pull | MB/s ↑ | 200 | | | 400 | | | 0.50x |"),
            "{table}"
        );
    }
}
