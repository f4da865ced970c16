//! The performance targets (issue 14), in one place: what each compares and its bound,
//! evaluated against a run's report, and the check behind `--check-targets`.

use anyhow::{bail, Result};

use crate::phases::{concurrent_metric, Plan};
use crate::report::{number, Report, Target, DISTRIBUTION, EMBEDDED, KUBO, NGINX, NODE};

/// One target.
#[derive(Debug, Clone)]
pub enum Definition {
    /// `metric` of `system` is at least `factor` times `of_metric` of `of`.
    AtLeast {
        metric: String,
        system: &'static str,
        factor: f64,
        of_metric: String,
        of: &'static str,
        /// How the other side is named in the target (`node add`, …).
        of_name: &'static str,
    },
    /// `metric` of `system` stays below `limit` (in the row's unit).
    Below {
        metric: String,
        system: &'static str,
        limit: f64,
        unit: &'static str,
    },
}

/// Every target, for the layer sizes and settings of `plan`. Issue 14's bounds; the RSS
/// target is about a 1 GiB layer, the default of `--memory-layer-mib`.
pub fn definitions(plan: &Plan) -> Vec<Definition> {
    let at_least = |metric: &str, system, factor, of, of_name| Definition::AtLeast {
        metric: metric.to_owned(),
        system,
        factor,
        of_metric: metric.to_owned(),
        of,
        of_name,
    };
    let mut targets = Vec::new();
    let chunked = |mib: u64| format!("push chunked {mib} MiB ({} MiB chunks)", plan.chunk_mib);
    for &mib in &plan.layers_mib {
        let pull = format!("pull {mib} MiB");
        targets.push(at_least(
            &format!("push monolithic {mib} MiB"),
            EMBEDDED,
            1.2,
            DISTRIBUTION,
            DISTRIBUTION,
        ));
        targets.push(at_least(
            &chunked(mib),
            EMBEDDED,
            1.2,
            DISTRIBUTION,
            DISTRIBUTION,
        ));
        targets.push(at_least(&pull, EMBEDDED, 1.3, DISTRIBUTION, DISTRIBUTION));
        targets.push(at_least(&pull, EMBEDDED, 0.9, NGINX, NGINX));
    }
    targets.push(at_least("manifest GET c=16", EMBEDDED, 0.5, NGINX, NGINX));
    for &mib in &plan.layers_mib {
        targets.push(at_least(
            &format!("push monolithic {mib} MiB"),
            KUBO,
            0.85,
            NODE,
            "node add",
        ));
        targets.push(at_least(&chunked(mib), KUBO, 0.85, NODE, "node add"));
        targets.push(at_least(
            &format!("pull {mib} MiB"),
            KUBO,
            0.9,
            NODE,
            "node cat",
        ));
    }
    if plan.concurrent_pushes > 0 {
        targets.push(at_least(
            &concurrent_metric(plan),
            EMBEDDED,
            1.0,
            DISTRIBUTION,
            DISTRIBUTION,
        ));
    }
    let rss = format!(
        "peak RSS, push + pull of one {} MiB layer",
        plan.memory_layer_mib
    );
    for system in [EMBEDDED, KUBO] {
        targets.push(Definition::Below {
            metric: rss.clone(),
            system,
            limit: 64.0,
            unit: "MiB",
        });
    }
    // Issue 17: the web UI's page of a repository with 10,000 tags (`--tags`) within 1 s.
    for system in [EMBEDDED, KUBO] {
        targets.push(Definition::Below {
            metric: format!("UI repository page, {} tags, p99", plan.tags),
            system,
            limit: 1000.0,
            unit: "ms",
        });
    }
    targets
}

/// Each target of `definitions`, checked against what `report` measured.
pub fn evaluate(report: &Report, definitions: &[Definition]) -> Vec<Target> {
    definitions
        .iter()
        .map(|d| evaluate_one(report, d))
        .collect()
}

fn evaluate_one(report: &Report, definition: &Definition) -> Target {
    match definition {
        Definition::AtLeast {
            metric,
            system,
            factor,
            of_metric,
            of,
            of_name,
        } => {
            let target = format!("{system} {metric} ≥ {factor}× {of_name}");
            let unit = report
                .rows
                .iter()
                .find(|r| &r.metric == metric)
                .map_or("", |r| r.unit);
            match (report.value(metric, system), report.value(of_metric, of)) {
                (Some(a), Some(b)) if b > 0.0 => {
                    let ratio = a / b;
                    Target {
                        target,
                        value: Some(ratio),
                        bound: *factor,
                        measured: format!("{ratio:.2}× ({} / {} {unit})", number(a), number(b)),
                        met: Some(ratio >= *factor),
                    }
                }
                (a, _) => {
                    let missing = if a.is_none() { system } else { of };
                    let missing_metric = if a.is_none() { metric } else { of_metric };
                    Target {
                        target,
                        value: None,
                        bound: *factor,
                        measured: not_measured(report, missing, missing_metric),
                        met: None,
                    }
                }
            }
        }
        Definition::Below {
            metric,
            system,
            limit,
            unit,
        } => {
            let target = format!("{system} {metric} < {limit} {unit}");
            match report.value(metric, system) {
                Some(v) => Target {
                    target,
                    value: Some(v),
                    bound: *limit,
                    measured: format!("{} {unit}", number(v)),
                    met: Some(v < *limit),
                },
                None => Target {
                    target,
                    value: None,
                    bound: *limit,
                    measured: not_measured(report, system, metric),
                    met: None,
                },
            }
        }
    }
}

fn not_measured(report: &Report, system: &str, metric: &str) -> String {
    match report.skipped.get(system) {
        Some(why) => format!("not measured: {system} skipped ({why})"),
        None => format!("not measured: no \"{metric}\" of {system}"),
    }
}

/// `--check-targets`: an error naming every target missed or not measured.
pub fn check(targets: &[Target]) -> Result<()> {
    let failed: Vec<String> = targets
        .iter()
        .filter(|t| t.met != Some(true))
        .map(|t| {
            let verdict = if t.met == Some(false) {
                "missed"
            } else {
                "not measured"
            };
            format!("  {verdict}: {} — {}", t.target, t.measured)
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} targets missed or not measured (--check-targets):\n{}",
            failed.len(),
            targets.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Better;

    fn plan() -> Plan {
        Plan {
            layers_mib: vec![32],
            iterations: 1,
            chunk_mib: 8,
            get_duration: std::time::Duration::from_secs(1),
            concurrencies: vec![16],
            tags: 100,
            list_samples: 1,
            memory_layer_mib: 1024,
            concurrent_pushes: 64,
            concurrent_layer_mib: 32,
            concurrent_kubo: false,
        }
    }

    #[test]
    fn met_missed_and_skipped() {
        let mut report = Report::default();
        let mono = "push monolithic 32 MiB";
        report.set(mono, "MB/s", Better::Higher, EMBEDDED, 300.0);
        report.set(mono, "MB/s", Better::Higher, DISTRIBUTION, 200.0);
        report.set("pull 32 MiB", "MB/s", Better::Higher, EMBEDDED, 1000.0);
        report.set("pull 32 MiB", "MB/s", Better::Higher, DISTRIBUTION, 1000.0);
        let rss = "peak RSS, push + pull of one 1024 MiB layer";
        report.set(rss, "MiB", Better::Lower, EMBEDDED, 40.0);
        report.skipped.insert(NGINX.into(), "--skip-nginx".into());
        let targets = evaluate(&report, &definitions(&plan()));
        let find = |name: &str| {
            targets
                .iter()
                .find(|t| t.target == name)
                .unwrap_or_else(|| panic!("no target {name}: {targets:#?}"))
        };
        let t = find("embedded push monolithic 32 MiB ≥ 1.2× distribution");
        assert_eq!(
            (t.met, t.measured.as_str()),
            (Some(true), "1.50× (300 / 200 MB/s)")
        );
        assert_eq!(
            find("embedded pull 32 MiB ≥ 1.3× distribution").met,
            Some(false)
        );
        let t = find("embedded pull 32 MiB ≥ 0.9× nginx");
        assert_eq!(t.met, None);
        assert_eq!(t.measured, "not measured: nginx skipped (--skip-nginx)");
        let t = find("embedded peak RSS, push + pull of one 1024 MiB layer < 64 MiB");
        assert_eq!(t.met, Some(true));
        assert!(find("kubo pull 32 MiB ≥ 0.9× node cat").met.is_none());
        find("embedded push 64 × 32 MiB concurrently (aggregate) ≥ 1× distribution");

        let error = check(&targets).unwrap_err().to_string();
        assert!(
            error.contains("missed: embedded pull 32 MiB ≥ 1.3× distribution"),
            "{error}"
        );
        assert!(
            error.contains("not measured: embedded pull 32 MiB ≥ 0.9× nginx"),
            "{error}"
        );
        let met: Vec<Target> = targets
            .into_iter()
            .filter(|t| t.met == Some(true))
            .collect();
        check(&met).unwrap();
    }
}
