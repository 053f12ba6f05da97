//! `ocean report`: plots (SVG and PNG) and an HTML page from the output of `ocean run`.
//!
//! * `value_over_time`: V̂ per model and version, window by window (the run's `window_secs`),
//!   with each window's own interval as a band (normal when reliable, else the fallback, as in
//!   `aggregates`);
//! * `grounded_over_time`: the mean grounded fraction per model and version and window;
//! * `weights`: the distribution of log₁₀ of the token importance weights π_θ/λ, entity tokens
//!   and the rest (share of tokens per quarter decade) — where the heavy tail is;
//! * `arms`: V̂ with its interval per model, version and segment, side by side.
//!
//! Every statistic comes from the estimator's own sums over the chains in `cot_scores`
//! ([`KgIpsStats`]), so the numbers match `aggregates` and `ocean compare`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::{DataType, Float64Type};
use ocean_operators::ips::{KgIpsStats, Summary};
use serde::Serialize;

use crate::chart::{Chart, Layer, Mark, PALETTE};
use crate::compare::{intervals_of, read_chains, run_file};
use crate::{Error, Result};

/// What `ocean report` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    /// The report folder.
    pub dir: PathBuf,
    /// Files written (charts as .svg and .png, index.html).
    pub files: Vec<PathBuf>,
    /// (model, version, segment) arms.
    pub arms: usize,
    /// Time windows with chains.
    pub windows: usize,
}

/// Sums of one group of chains.
#[derive(Debug, Clone, Copy, Default)]
struct Group {
    stats: KgIpsStats,
    grounded_sum: f64,
    grounded_n: f64,
}

impl Group {
    fn grounded(&self) -> Option<f64> {
        (self.grounded_n > 0.0).then(|| self.grounded_sum / self.grounded_n)
    }
}

/// "YYYY-MM-DD HH:MM" (UTC) of seconds since the epoch.
pub fn utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", rest / 3600, rest % 3600 / 60)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Writes the report of the run output `out` into `dir` (created if missing).
pub fn report(out: &Path, dir: &Path) -> Result<ReportSummary> {
    let run_config = run_file(out, "run_config.json");
    let intervals = intervals_of(&run_config);
    let window = run_config["aggregates"]["window_secs"].as_i64().filter(|w| *w > 0).unwrap_or(86_400);
    let mut by_window: BTreeMap<(String, String), BTreeMap<i64, Group>> = BTreeMap::new();
    let mut by_arm: BTreeMap<(String, String, String), Group> = BTreeMap::new();
    let mut self_normalized = false;
    read_chains(out, "true", |r| {
        let start = (r.event_us.div_euclid(1_000_000)).div_euclid(window) * window;
        let arm = (r.model.to_owned(), r.version.to_owned());
        let segment = r.segment.unwrap_or("").to_owned();
        self_normalized |= r.estimator.ends_with("+sn");
        for g in [
            by_window.entry(arm.clone()).or_default().entry(start).or_default(),
            by_arm.entry((arm.0, arm.1, segment)).or_default(),
        ] {
            g.stats.add(&r.chain, 1.0);
            if let Some(f) = r.grounded_fraction {
                g.grounded_sum += f;
                g.grounded_n += 1.0;
            }
        }
    })?;
    if by_arm.is_empty() {
        return Err(Error::Config(format!("{} has no scored chains of thought to report on", out.display())));
    }
    let summarize = |g: &Group| -> Summary { g.stats.summarize(self_normalized, &intervals) };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        files.push(path);
        Ok(())
    };

    // Window starts as x, labelled by date (at most 8 labels).
    let starts: Vec<i64> = {
        let mut all: Vec<i64> = by_window.values().flat_map(|w| w.keys().copied()).collect();
        all.sort_unstable();
        all.dedup();
        all
    };
    let every = starts.len().div_ceil(8).max(1);
    let x_ticks: Vec<(f64, String)> = starts.iter().step_by(every).map(|&s| (s as f64, utc(s))).collect();
    let label = |(m, v): &(String, String)| format!("{m} / {v}");

    let mut value = Chart {
        title: format!("KG-IPS V̂ per {} window, with its interval", window_name(window)),
        x_label: "window start (UTC)".into(),
        y_label: "V̂".into(),
        x_ticks: Some(x_ticks.clone()),
        ..Chart::default()
    };
    let mut grounded = Chart {
        title: "Grounded fraction of entity mentions".into(),
        x_label: "window start (UTC)".into(),
        y_label: "mean grounded fraction".into(),
        x_ticks: Some(x_ticks),
        ..Chart::default()
    };
    for (i, (arm, windows)) in by_window.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, Summary)> = windows.iter().map(|(s, g)| (*s as f64, summarize(g))).collect();
        let band = points.iter().map(|(x, s)| (*x, s.interval().0 .0, s.interval().0 .1)).filter(|b| b.1.is_finite());
        value.layers.push(Layer { name: String::new(), colour, mark: Mark::Band(band.collect()) });
        value.layers.push(Layer {
            name: label(arm),
            colour,
            mark: Mark::Line(points.iter().map(|(x, s)| (*x, s.estimate)).collect()),
        });
        let fractions = windows.iter().filter_map(|(s, g)| Some((*s as f64, g.grounded()?)));
        grounded.layers.push(Layer { name: label(arm), colour, mark: Mark::Line(fractions.collect()) });
    }

    // Importance weights: share of tokens per quarter decade of π_θ/λ.
    let batches = crate::sql::query_blocking(
        out,
        "select is_entity, floor(log_weight / ln(10.0) * 4.0) / 4.0 as bin, count(*) as n \
         from token_scores group by 1, 2 order by 1, 2",
    )?;
    let mut bins: [BTreeMap<i64, f64>; 2] = Default::default();
    for b in &batches {
        let entity = b.column(0).as_boolean();
        let bin = b.column(1).as_primitive::<Float64Type>();
        let n = arrow::compute::cast(b.column(2), &DataType::Float64)?;
        let n = n.as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let key = (bin.value(i) * 4.0).round() as i64;
            *bins[usize::from(entity.value(i))].entry(key).or_default() += n.value(i);
        }
    }
    let mut weights = Chart {
        title: "Importance weights π_θ/λ (share of tokens per quarter decade)".into(),
        x_label: "log₁₀ weight".into(),
        y_label: "share of tokens".into(),
        ..Chart::default()
    };
    for (k, name) in [(0usize, "non-entity tokens"), (1, "entity tokens")] {
        let total: f64 = bins[k].values().sum();
        let bars = bins[k].iter().map(|(b, n)| {
            let x = *b as f64 / 4.0;
            let half = 0.125 * if k == 0 { 1.0 } else { 0.6 };
            (x + 0.125 - half, x + 0.125 + half, n / total.max(1.0))
        });
        weights.layers.push(Layer {
            name: format!("{name} ({total:.0})"),
            colour: PALETTE[k],
            mark: Mark::Bars(bars.collect()),
        });
    }

    // Arms side by side.
    let mut arms = Chart {
        title: "V̂ per model, version and segment, with its interval".into(),
        x_label: String::new(),
        y_label: "V̂".into(),
        ..Chart::default()
    };
    let mut ticks = Vec::new();
    let models: Vec<(String, String)> = by_window.keys().cloned().collect();
    let mut rows = String::new();
    for (i, ((m, v, segment), g)) in by_arm.iter().enumerate() {
        let s = summarize(g);
        let ((lo, hi), method) = s.interval();
        let colour = PALETTE[models.iter().position(|k| k.0 == *m && k.1 == *v).unwrap_or(0) % PALETTE.len()];
        arms.layers.push(Layer {
            name: String::new(),
            colour,
            mark: Mark::ErrorBars(vec![(i as f64, s.estimate, lo, hi)]),
        });
        let name = if segment.is_empty() { format!("{m} / {v}") } else { format!("{m} / {v} / {segment}") };
        ticks.push((i as f64, name.clone()));
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.4}</td><td>{:.4}</td><td>[{:.4}, {:.4}]</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(m),
            html_escape(v),
            html_escape(segment),
            g.stats.n,
            s.estimate,
            s.std_error,
            lo,
            hi,
            method,
            if s.reliable { "yes" } else { "<b>UNRELIABLE</b>" },
            g.grounded().map_or("-".to_owned(), |f| format!("{f:.3}"))
        );
    }
    arms.x_ticks = Some(ticks);

    let charts = [
        (
            "value_over_time",
            &value,
            "V̂ over time: each model and version window by window; the band is each window's interval.",
        ),
        ("grounded_over_time", &grounded, "Share of entity mentions the KG supports, per window."),
        (
            "weights",
            &weights,
            "Where the heavy tail is: token weights π_θ/λ on a log scale, entity tokens against the rest.",
        ),
        ("arms", &arms, "Each model, version and segment with its interval (normal when reliable, else conservative)."),
    ];
    let mut figures = String::new();
    for (name, chart, caption) in charts {
        write(&format!("{name}.svg"), chart.svg(900, 420).as_bytes())?;
        write(&format!("{name}.png"), &chart.png(900, 420))?;
        let _ = writeln!(
            figures,
            "<figure><img src=\"{name}.svg\" alt=\"{}\" width=\"900\" height=\"420\"><figcaption>{} (<a href=\"{name}.png\">PNG</a>)</figcaption></figure>",
            html_escape(&chart.title),
            html_escape(caption)
        );
    }
    let summary = run_file(out, "summary.json");
    let facts: Vec<String> = [
        ("records in", &summary["records"]),
        ("chains of thought scored", &summary["cots_scored"]),
        ("rejects", &summary["rejects"]),
        ("KG policy", &summary["kg_policy"]),
    ]
    .iter()
    .filter(|(_, v)| !v.is_null())
    .map(|(k, v)| format!("<li>{k}: {}</li>", html_escape(&v.to_string().replace('"', ""))))
    .collect();
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Ocean report: {out}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em;max-width:960px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}figure{{margin:1.5em 0}}</style>\n</head>\n<body>\n\
         <h1>Ocean report</h1>\n<p>Run output <code>{out}</code>, windows of {window} s, interval level {level:.0} %.</p>\n\
         <ul>{facts}</ul>\n<h2>Estimates</h2>\n<table>\n<tr><th>model</th><th>version</th><th>segment</th><th>n</th>\
         <th>V̂</th><th>s.e.</th><th>interval</th><th>method</th><th>reliable</th><th>grounded</th></tr>\n{rows}\n</table>\n\
         <h2>Plots</h2>\n{figures}</body>\n</html>\n",
        out = html_escape(&out.display().to_string()),
        level = 100.0 * intervals.confidence,
        facts = facts.join(""),
    );
    write("index.html", html.as_bytes())?;
    Ok(ReportSummary { dir: dir.to_owned(), files, arms: by_arm.len(), windows: starts.len() })
}

/// "day", "hour", or "N-second".
fn window_name(seconds: i64) -> String {
    match seconds {
        86_400 => "day".into(),
        3_600 => "hour".into(),
        60 => "minute".into(),
        s => format!("{s}-second"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_by_hand() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_767_225_600), "2026-01-01 00:00");
        assert_eq!(utc(1_709_210_096), "2024-02-29 12:34");
        assert_eq!(utc(-86_400), "1969-12-31 00:00");
    }
}
