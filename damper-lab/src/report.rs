//! The outputs: `report.json`, the stdout table, one SVG chart per scenario and `index.html`.

use crate::metrics::{Metrics, RecoveryStatus, Series};
use plotters::prelude::*;
use serde::Serialize;
use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// `report.json`: `{"scenarios":[{"name":…,"stacks":[{"name":…,"metrics":{…},"series":{…}}]}]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// One entry per scenario (grid cells are scenarios of their own).
    pub scenarios: Vec<ScenarioReport>,
}

/// One scenario's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioReport {
    /// Its name, e.g. `metastable/load85-trigger10s`.
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Offered-load trigger window, seconds.
    pub window: Option<(f64, f64)>,
    /// Goodput ratio of a clairvoyant client on the same arrivals (see [`crate::oracle`]).
    pub oracle_goodput: f64,
    /// The oracle's expected successes each second, by arrival second.
    pub oracle_series: Vec<f64>,
    /// One entry per stack, in registry order.
    pub stacks: Vec<StackReport>,
}

/// One stack's results in one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackReport {
    /// The stack's name.
    pub name: String,
    /// Its metrics.
    pub metrics: Metrics,
    /// Its per-second series.
    pub series: Series,
}

impl Report {
    /// The JSON text (pretty, deterministic: struct field order, no maps).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    /// The stdout table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<32} {:<13} {:>7} {:>6} {:>9} {:>6} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>6} {:>5} {:>6} {:>6}",
            "scenario",
            "stack",
            "goodput",
            "oracle",
            "vs-oracle",
            "amp",
            "amp_1s",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "recovery",
            "rec_ms",
            "false_to",
            "hedge",
            "brk",
            "lim_cv",
            "settle"
        );
        let opt = |v: Option<f64>, prec: usize| match v {
            Some(x) => format!("{x:.prec$}"),
            None => "-".to_owned(),
        };
        for sc in &self.scenarios {
            for st in &sc.stacks {
                let m = &st.metrics;
                let recovery = match (m.recovered, m.recovery_s) {
                    (None, _) => "-".to_owned(),
                    (Some(_), Some(r)) => format!("{r:.1}s"),
                    (Some(_), None) => "never".to_owned(),
                };
                let rec_ms = match (m.recovery_ms_status, m.recovery_ms) {
                    (None, _) => "-".to_owned(),
                    (Some(RecoveryStatus::Recovered), Some(ms)) => format!("{ms:.0}"),
                    (Some(RecoveryStatus::Never), _) => "never".to_owned(),
                    (Some(_), _) => "too-late".to_owned(),
                };
                let _ = writeln!(
                    s,
                    "{:<32} {:<13} {:>7.3} {:>6.3} {:>9} {:>6.2} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8.4} {:>6} {:>5} {:>6} {:>6}",
                    sc.name,
                    st.name,
                    m.goodput_ratio,
                    sc.oracle_goodput,
                    opt(m.goodput_vs_oracle, 3),
                    m.amplification,
                    opt(m.amplification_worst_s, 2),
                    opt(m.p50_ms, 1),
                    opt(m.p99_ms, 1),
                    opt(m.p999_ms, 1),
                    recovery,
                    rec_ms,
                    m.false_timeout_rate,
                    opt(m.hedge_extra_load, 3),
                    m.breaker_transitions
                        .map_or_else(|| "-".to_owned(), |b| b.to_string()),
                    opt(m.limit_cv, 3),
                    opt(m.limit_settle_s, 1),
                );
            }
        }
        s
    }

    /// Writes `report.json`, one SVG per scenario and `index.html` into `dir`.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), self.to_json())?;
        let mut index = String::from(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>damper-lab</title>\
             <style>body{font-family:sans-serif;margin:2em}img{max-width:100%;border:1px solid #ddd}</style>\
             </head><body>\n<h1>damper-lab</h1>\n<p><a href=\"report.json\">report.json</a></p>\n<ul>\n",
        );
        for sc in &self.scenarios {
            let file = chart_file(&sc.name);
            chart(sc, &dir.join(&file)).map_err(|e| io::Error::other(e.to_string()))?;
            let _ = writeln!(
                index,
                "<li><a href=\"#{file}\">{}</a> — {}</li>",
                html(&sc.name),
                html(&sc.description)
            );
        }
        index.push_str("</ul>\n");
        for sc in &self.scenarios {
            let file = chart_file(&sc.name);
            let _ = writeln!(
                index,
                "<h2 id=\"{file}\">{}</h2>\n<p>{}</p>\n<a href=\"{file}\"><img src=\"{file}\" alt=\"{}\"></a>",
                html(&sc.name),
                html(&sc.description),
                html(&sc.name)
            );
        }
        index.push_str("</body></html>\n");
        std::fs::write(dir.join("index.html"), index)
    }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chart's file name for a scenario (`/` becomes `_`).
pub fn chart_file(name: &str) -> String {
    format!("{}.svg", name.replace(['/', '\\'], "_"))
}

const COLORS: [RGBColor; 5] = [
    RGBColor(120, 120, 120),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    sc: &ScenarioReport,
    pick: &dyn Fn(&StackReport) -> Option<Vec<f64>>,
    offered: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let n = sc
        .stacks
        .iter()
        .map(|s| s.series.offered.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut ymax: f64 = 1.0;
    if offered {
        ymax = sc.oracle_series.iter().copied().fold(ymax, f64::max);
    }
    for st in &sc.stacks {
        if let Some(v) = pick(st) {
            ymax = v.iter().copied().fold(ymax, f64::max);
        }
        if offered {
            ymax = st
                .series
                .offered
                .iter()
                .map(|x| *x as f64)
                .fold(ymax, f64::max);
        }
    }
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .light_line_style(WHITE)
        .draw()?;
    if let Some((a, z)) = sc.window {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(a, 0.0), (z, ymax * 1.05)],
            RGBColor(255, 200, 120).mix(0.25).filled(),
        )))?;
    }
    if offered {
        // Each stack's own offered load (impatient users' retries make it differ), thin.
        for (i, st) in sc.stacks.iter().enumerate() {
            chart.draw_series(LineSeries::new(
                st.series
                    .offered
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64 + 0.5, *v as f64)),
                color(i).mix(0.6).stroke_width(1),
            ))?;
        }
    }
    if offered && !sc.oracle_series.is_empty() {
        // The limit: what a clairvoyant client would get each second.
        let style = BLACK.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                sc.oracle_series
                    .iter()
                    .enumerate()
                    .map(|(i, y)| (i as f64 + 0.5, *y)),
                6,
                4,
                style,
            ))?
            .label("oracle")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
    }
    for (i, st) in sc.stacks.iter().enumerate() {
        let Some(v) = pick(st) else { continue };
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                v.iter().enumerate().map(|(i, y)| (i as f64 + 0.5, *y)),
                c.stroke_width(2),
            ))?
            .label(st.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

fn as_f64(v: &[u64]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

/// Draws one scenario's chart: goodput (with offered load), backend attempts, and breaker
/// state / concurrency limit where a stack reports them.
pub fn chart(sc: &ScenarioReport, path: &Path) -> DrawResult {
    let breaker = sc.stacks.iter().any(|s| s.series.breaker_state.is_some());
    let limit = sc.stacks.iter().any(|s| s.series.limit.is_some());
    let panels = 2 + usize::from(breaker) + usize::from(limit);
    let root = SVGBackend::new(path, (960, 300 * panels as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels, 1));
    panel(
        &areas[0],
        &format!(
            "{} — goodput (ok/s, thick), oracle (dashed) and offered load (req/s, thin)",
            sc.name
        ),
        sc,
        &|s| Some(as_f64(&s.series.goodput)),
        true,
    )?;
    panel(
        &areas[1],
        "backend attempts per second",
        sc,
        &|s| Some(as_f64(&s.series.attempts)),
        false,
    )?;
    let mut next = 2;
    if breaker {
        panel(
            &areas[next],
            "breaker state (0 closed, 1 half-open, 2 open)",
            sc,
            &|s| s.series.breaker_state.clone(),
            false,
        )?;
        next += 1;
    }
    if limit {
        panel(
            &areas[next],
            "concurrency limit",
            sc,
            &|s| s.series.limit.clone(),
            false,
        )?;
    }
    root.present()?;
    Ok(())
}
