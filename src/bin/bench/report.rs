//! Results: every number with its unit, the ratios against distribution, the targets of
//! issue 7, and their rendering as JSON and as a Markdown table.

use std::collections::BTreeMap;

use serde::Serialize;

pub const DISTRIBUTION: &str = "distribution";
pub const EMBEDDED: &str = "embedded";
pub const KUBO: &str = "kubo";
pub const NODE: &str = "ipfs-node";
/// Column order of the table.
const COLUMNS: [&str; 4] = [EMBEDDED, KUBO, DISTRIBUTION, NODE];

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

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: BTreeMap<String, String>,
    pub settings: BTreeMap<String, String>,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
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

    /// `a / b` of two measured values, when both exist.
    pub fn ratio(
        &self,
        metric_a: &str,
        system_a: &str,
        metric_b: &str,
        system_b: &str,
    ) -> Option<f64> {
        Some(self.value(metric_a, system_a)? / self.value(metric_b, system_b)?)
    }

    /// Checks a target: `ratio` (None = not measured) against `bound`, `at_least` or at most.
    pub fn target(
        &mut self,
        target: String,
        ratio: Option<f64>,
        bound: f64,
        at_least: bool,
        unit: &str,
    ) {
        let (measured, met) = match ratio {
            Some(r) => (
                format!("{r:.2}{unit}"),
                Some(if at_least { r >= bound } else { r <= bound }),
            ),
            None => ("not measured".to_owned(), None),
        };
        self.targets.push(Target {
            target,
            measured,
            met,
        });
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
        out.push('\n');
        let columns = 2 + systems.len() + if with_distribution { ours.len() } else { 0 };
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
            if with_distribution {
                for s in &ours {
                    match (row.values.get(*s), row.values.get(DISTRIBUTION)) {
                        (Some(a), Some(b)) if *b > 0.0 => {
                            out.push_str(&format!(" {:.2}x |", a / b))
                        }
                        _ => out.push_str(" |"),
                    }
                }
            }
            out.push('\n');
        }
        if !self.targets.is_empty() {
            out.push_str("\n| target | measured | met |\n|---|---|---|\n");
            for t in &self.targets {
                let met = match t.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "–",
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

fn number(v: f64) -> String {
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
    fn ratios_against_distribution_and_targets() {
        let mut report = Report::default();
        report.set("push", "MB/s", Better::Higher, EMBEDDED, 300.0);
        report.set("push", "MB/s", Better::Higher, DISTRIBUTION, 200.0);
        report.set("push", "MB/s", Better::Higher, KUBO, 50.0);
        let table = report.markdown();
        assert!(
            table.contains("| push | MB/s ↑ | 300 | 50.0 | 200 | 1.50x | 0.25x |"),
            "{table}"
        );
        let ratio = report.ratio("push", EMBEDDED, "push", DISTRIBUTION);
        report.target("push ≥ 1x".into(), ratio, 1.0, true, "x");
        report.target(
            "missing".into(),
            report.ratio("x", EMBEDDED, "push", KUBO),
            1.0,
            true,
            "x",
        );
        assert_eq!(report.targets[0].met, Some(true));
        assert_eq!(report.targets[1].met, None);
        assert!(report.markdown().contains("| push ≥ 1x | 1.50x | yes |"));
    }
}
