//! Charts of a run, as SVG files beside results.md: throughput per system and layer size
//! (push, pull) and manifest GETs per concurrency, as grouped bars. SVG only, so no fonts:
//! the labels are `<text>` elements the viewer renders (their widths are estimated).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::phases::{concurrent_metric, Plan};
use crate::report::{Report, COLUMNS, DISTRIBUTION, EMBEDDED, KUBO, NGINX, NODE};

/// One group of bars: a label, and per system the row it reads.
struct Group {
    label: String,
    /// (system, metric) in column order.
    bars: Vec<(&'static str, String)>,
}

fn color(system: &str) -> RGBColor {
    match system {
        EMBEDDED => RGBColor(31, 119, 180),
        KUBO => RGBColor(44, 160, 44),
        DISTRIBUTION => RGBColor(255, 127, 14),
        NGINX => RGBColor(148, 103, 189),
        NODE => RGBColor(150, 150, 150),
        _ => BLACK,
    }
}

fn legend(system: &str) -> String {
    match system {
        NODE => "ipfs-node (its own add / cat)".to_owned(),
        NGINX => "nginx (static files)".to_owned(),
        _ => system.to_owned(),
    }
}

/// Writes every chart into `dir`; returns their paths.
pub fn write(report: &Report, plan: &Plan, dir: &Path) -> Result<Vec<PathBuf>> {
    let all = |metric: String| -> Vec<(&'static str, String)> {
        COLUMNS.iter().map(|s| (*s, metric.clone())).collect()
    };
    let mut push = Vec::new();
    let mut pull = Vec::new();
    for &mib in &plan.layers_mib {
        push.push(Group {
            label: format!("monolithic {mib} MiB"),
            bars: all(format!("push monolithic {mib} MiB")),
        });
        push.push(Group {
            label: format!("chunked {mib} MiB"),
            bars: all(format!(
                "push chunked {mib} MiB ({} MiB chunks)",
                plan.chunk_mib
            )),
        });
        pull.push(Group {
            label: format!("{mib} MiB"),
            bars: all(format!("pull {mib} MiB")),
        });
    }
    if plan.concurrent_pushes > 0 {
        push.push(Group {
            label: format!(
                "{} × {} MiB at once",
                plan.concurrent_pushes, plan.concurrent_layer_mib
            ),
            bars: all(concurrent_metric(plan)),
        });
    }
    let gets = plan
        .concurrencies
        .iter()
        .map(|c| Group {
            label: format!("{c} client{}", if *c == 1 { "" } else { "s" }),
            bars: all(format!("manifest GET c={c}")),
        })
        .collect::<Vec<_>>();
    let mut written = Vec::new();
    for (file, title, unit, groups) in [
        ("push.svg", "Push throughput", "MB/s", push),
        ("pull.svg", "Pull throughput", "MB/s", pull),
        (
            "manifest-get.svg",
            "Manifest GET by tag, closed loop",
            "requests/s",
            gets,
        ),
    ] {
        let path = dir.join(file);
        let svg = bar_chart(
            report,
            &format!("{title} ({unit}, higher is better)"),
            unit,
            &groups,
        )?;
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Grouped bars, one colour per system; systems with no value in any group are left out.
fn bar_chart(report: &Report, title: &str, unit: &str, groups: &[Group]) -> Result<String> {
    let systems: Vec<&'static str> = COLUMNS
        .iter()
        .copied()
        .filter(|s| {
            groups.iter().any(|g| {
                g.bars
                    .iter()
                    .any(|(system, metric)| system == s && report.value(metric, system).is_some())
            })
        })
        .collect();
    let value = |group: &Group, system: &str| {
        group
            .bars
            .iter()
            .find(|(s, _)| *s == system)
            .and_then(|(s, metric)| report.value(metric, s))
    };
    let highest = groups
        .iter()
        .flat_map(|g| systems.iter().filter_map(move |s| value(g, s)))
        .fold(0.0f64, f64::max);
    // Each group: a slot per system and one slot of space.
    let slots = systems.len().max(1) + 1;
    let width = (groups.len() * slots * 28 + 160).max(640) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(plot)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(64)
            .build_cartesian_2d(
                0f64..(groups.len() * slots) as f64,
                // Room above the bars for the legend.
                0f64..(highest * 1.3).max(1.0),
            )
            .map_err(plot)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.12))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_labels(0)
            .y_desc(unit)
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(plot)?;
        for (k, system) in systems.iter().enumerate() {
            let fill = color(system);
            let bars = groups.iter().enumerate().filter_map(|(g, group)| {
                let v = value(group, system)?;
                let x = (g * slots + k) as f64 + 0.5;
                Some(Rectangle::new([(x, 0.0), (x + 1.0, v)], fill.filled()))
            });
            chart
                .draw_series(bars)
                .map_err(plot)?
                .label(legend(system))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], fill.filled()));
            let numbers = groups.iter().enumerate().filter_map(|(g, group)| {
                let v = value(group, system)?;
                let x = (g * slots + k) as f64 + 1.0;
                let style = TextStyle::from(("sans-serif", 10).into_font())
                    .pos(Pos::new(HPos::Center, VPos::Bottom));
                Some(Text::new(short(v), (x, v), style))
            });
            chart.draw_series(numbers).map_err(plot)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(plot)?;
        // Group names under the axis, centred under their bars (drawn on the whole
        // area: the plotting area would clip them).
        let centre = systems.len() as f64 / 2.0 + 0.5;
        for (g, group) in groups.iter().enumerate() {
            let (x, y) = chart.backend_coord(&((g * slots) as f64 + centre, 0.0));
            let style = TextStyle::from(("sans-serif", 13).into_font())
                .pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(group.label.clone(), (x, y + 8), style))
                .map_err(plot)?;
        }
        root.present().map_err(plot)?;
    }
    Ok(svg)
}

/// A bar's number, short enough to sit above it.
fn short(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn plot<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Better;

    #[test]
    fn bars_for_every_measured_system() {
        let mut report = Report::default();
        report.set("pull 4 MiB", "MB/s", Better::Higher, EMBEDDED, 900.0);
        report.set("pull 4 MiB", "MB/s", Better::Higher, NGINX, 1500.0);
        let groups = [Group {
            label: "4 MiB".into(),
            bars: vec![
                (EMBEDDED, "pull 4 MiB".into()),
                (NGINX, "pull 4 MiB".into()),
                (DISTRIBUTION, "pull 4 MiB".into()),
            ],
        }];
        let svg = bar_chart(&report, "Pull", "MB/s", &groups).unwrap();
        assert!(svg.starts_with("<svg"), "{svg:.200}");
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim()))
            .collect();
        for text in ["900", "1500", "4 MiB", "nginx (static files)", "embedded"] {
            assert!(texts.contains(&text), "no {text} in {texts:?}");
        }
        assert!(!texts.contains(&"distribution"), "{texts:?}");
    }
}
