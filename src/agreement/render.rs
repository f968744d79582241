//! The report as a text table and as a self-contained HTML page with inline SVG plots.

use std::fmt::Write;

use serde_json::Value;

use super::report::{AgreementReport, Rate};
use super::{Comparison, Difference, DifferenceKind};

/// Longest value text shown in a disagreement (longer values are cut, with `…`).
const MAX_VALUE_CHARS: usize = 60;

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{:.1}%", x * 100.0))
}

fn interval(r: &Rate) -> String {
    match (r.lower, r.upper) {
        (Some(l), Some(u)) => format!("[{:.1}%, {:.1}%]", l * 100.0, u * 100.0),
        _ => "-".into(),
    }
}

fn value(v: Option<&Value>) -> String {
    let Some(v) = v else {
        return "(absent)".into();
    };
    let s = v.to_string();
    if s.chars().count() > MAX_VALUE_CHARS {
        let cut: String = s.chars().take(MAX_VALUE_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// One line describing a difference.
fn difference(d: &Difference) -> String {
    let (r, h) = (value(d.recommended.as_ref()), value(d.human.as_ref()));
    match d.kind {
        DifferenceKind::Missing => {
            format!("{}: missing from the recommendation (human: {h})", d.path)
        }
        DifferenceKind::Extra => format!("{}: not used by the human (recommended: {r})", d.path),
        DifferenceKind::Differs => format!("{}: recommended {r}, human {h}", d.path),
        DifferenceKind::OutsideTolerance => {
            format!("{}: outside tolerance: recommended {r}, human {h}", d.path)
        }
        DifferenceKind::SetDiffers => {
            format!("{}: different set: recommended {r}, human {h}", d.path)
        }
    }
}

/// What the human did differently, in one line.
fn comparison(c: &Comparison) -> String {
    match c {
        Comparison::Agree => "agreed".into(),
        Comparison::NoAction => "the human did nothing".into(),
        Comparison::OtherTool { human } => format!("the human used another tool: {human}"),
        Comparison::Arguments { differences } => differences
            .iter()
            .map(difference)
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn table(out: &mut String, header: &[&str], rows: &[Vec<String>], right: &[bool]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i > 0 {
                s.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(
        out,
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    for r in rows {
        line(out, r);
    }
}

fn rate_row(task: &str, tool: &str, r: &Rate) -> Vec<String> {
    vec![
        task.into(),
        tool.into(),
        r.cases.to_string(),
        r.agreements.to_string(),
        pct(r.rate),
        interval(r),
        r.unanswered.to_string(),
    ]
}

pub(super) fn text(r: &AgreementReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Agreement: {} recommendations, {} answered by a human, {} unanswered; {} records read{}",
        r.recommendations,
        r.overall.cases,
        r.overall.unanswered,
        r.records,
        if r.orphan_actions > 0 {
            format!(
                "; {} human actions without their recommendation",
                r.orphan_actions
            )
        } else {
            String::new()
        }
    );
    out.push('\n');
    let mut rows: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|g| {
            rate_row(
                g.task_type.as_deref().unwrap_or("(none)"),
                &g.tool,
                &g.figures,
            )
        })
        .collect();
    rows.push(rate_row("(all)", "", &r.overall));
    table(
        &mut out,
        &[
            "task type",
            "tool",
            "cases",
            "agreed",
            "rate",
            "95% Wilson",
            "unanswered",
        ],
        &rows,
        &[false, false, true, true, true, false, true],
    );

    out.push_str("\nDisagreements by kind\n");
    if r.catalogue.is_empty() {
        out.push_str("  none\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .catalogue
            .iter()
            .map(|c| {
                vec![
                    c.tool.clone(),
                    c.kind.clone(),
                    c.detail.clone().unwrap_or_default(),
                    c.count.to_string(),
                ]
            })
            .collect();
        table(
            &mut out,
            &["tool", "kind", "argument / tool", "count"],
            &rows,
            &[false, false, false, true],
        );
    }

    let c = &r.calibration;
    let _ = writeln!(
        out,
        "\nCalibration: {} cases with a confidence ({} without); Brier score {}; largest bin gap {}",
        c.cases,
        c.without_confidence,
        c.brier.map_or_else(|| "-".into(), |b| format!("{b:.4}")),
        pct(c.max_gap),
    );
    let rows: Vec<Vec<String>> = c
        .bins
        .iter()
        .filter(|b| b.cases > 0)
        .map(|b| {
            vec![
                format!(
                    "[{:.2}, {:.2}{}",
                    b.from,
                    b.to,
                    if b.to >= 1.0 { "]" } else { ")" }
                ),
                b.cases.to_string(),
                b.mean_confidence
                    .map_or_else(|| "-".into(), |m| format!("{m:.3}")),
                pct(b.observed),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table(
            &mut out,
            &["confidence", "cases", "mean", "agreed"],
            &rows,
            &[false, true, true, true],
        );
    }

    if !r.disagreements.is_empty() {
        out.push_str("\nDisagreements (values as the audit trail holds them)\n");
        for d in &r.disagreements {
            let _ = write!(
                out,
                "  {} (seq {}, run {}, {}) {}: {}",
                d.recommendation,
                d.seq,
                d.run,
                d.task_type.as_deref().unwrap_or("no task type"),
                d.tool,
                comparison(&d.comparison)
            );
            if let Some(n) = &d.note {
                let _ = write!(out, "; note: {}", value(Some(&Value::String(n.clone()))));
            }
            out.push('\n');
        }
        if r.disagreements_omitted > 0 {
            let _ = writeln!(out, "  ... and {} more", r.disagreements_omitted);
        }
    }
    out
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Plot geometry: a square-ish area inside margins.
const W: f64 = 420.0;
const H: f64 = 300.0;
const ML: f64 = 50.0;
const MR: f64 = 15.0;
const MT: f64 = 15.0;
const MB: f64 = 45.0;

fn px(x: f64) -> f64 {
    ML + x.clamp(0.0, 1.0) * (W - ML - MR)
}

fn py(y: f64) -> f64 {
    H - MB - y.clamp(0.0, 1.0) * (H - MT - MB)
}

/// Axes with ticks at 0, 0.25, ..., 1 on y (and on x when `x_ticks`), and labels.
fn axes(s: &mut String, x_label: &str, y_label: &str, x_ticks: bool) {
    let _ = write!(
        s,
        r##"<g class="axes" stroke="#333" fill="none"><line x1="{l}" y1="{b}" x2="{r}" y2="{b}"/><line x1="{l}" y1="{b}" x2="{l}" y2="{t}"/></g>"##,
        l = ML,
        r = W - MR,
        t = MT,
        b = H - MB
    );
    for i in 0..=4 {
        let v = f64::from(i) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{a}" y1="{y}" x2="{l}" y2="{y}" stroke="#333"/><text x="{tx}" y="{ty}" font-size="11" text-anchor="end">{v:.2}</text>"##,
            a = ML - 4.0,
            l = ML,
            y = py(v),
            tx = ML - 6.0,
            ty = py(v) + 4.0
        );
        if x_ticks {
            let _ = write!(
                s,
                r##"<line x1="{x}" y1="{b}" x2="{x}" y2="{b4}" stroke="#333"/><text x="{x}" y="{ty}" font-size="11" text-anchor="middle">{v:.2}</text>"##,
                x = px(v),
                b = H - MB,
                b4 = H - MB + 4.0,
                ty = H - MB + 16.0
            );
        }
    }
    let _ = write!(
        s,
        r##"<text x="{cx}" y="{by}" font-size="12" text-anchor="middle">{xl}</text><text x="14" y="{cy}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {cy})">{yl}</text>"##,
        cx = (ML + W - MR) / 2.0,
        by = H - 8.0,
        cy = (MT + H - MB) / 2.0,
        xl = esc(x_label),
        yl = esc(y_label)
    );
}

fn reliability_svg(r: &AgreementReport) -> String {
    let mut s = format!(
        r##"<svg id="reliability" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="Reliability diagram: agent confidence against observed agreement">"##
    );
    axes(&mut s, "agent confidence", "observed agreement", true);
    let _ = write!(
        s,
        r##"<line class="diagonal" x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999" stroke-dasharray="4 3"/>"##,
        px(0.0),
        py(0.0),
        px(1.0),
        py(1.0)
    );
    let max = r
        .calibration
        .bins
        .iter()
        .map(|b| b.cases)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut pts = Vec::new();
    for b in &r.calibration.bins {
        if let (Some(m), Some(o)) = (b.mean_confidence, b.observed) {
            pts.push((px(m), py(o)));
            let rad = 3.0 + 6.0 * (b.cases as f64 / max).sqrt();
            let _ = write!(
                s,
                r##"<circle class="bin" cx="{:.1}" cy="{:.1}" r="{rad:.1}" fill="#2a6fdb" fill-opacity="0.7" data-cases="{}"><title>confidence {:.2}-{:.2}: {} cases, mean confidence {m:.3}, agreed {:.1}%</title></circle>"##,
                px(m),
                py(o),
                b.cases,
                b.from,
                b.to,
                b.cases,
                o * 100.0
            );
        }
    }
    if pts.len() > 1 {
        let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#2a6fdb"/>"##,
            p.join(" ")
        );
    }
    if pts.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="12" text-anchor="middle">no answered case with a confidence</text>"##,
            (ML + W - MR) / 2.0,
            (MT + H - MB) / 2.0
        );
    }
    s.push_str("</svg>");
    s
}

fn timeline_svg(r: &AgreementReport) -> String {
    let mut s = format!(
        r##"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="Agreement over time with 95% Wilson intervals">"##
    );
    let t = &r.timeline;
    let first = t.points.first().map_or(0, |p| p.start_unix_nano);
    let last = t.points.last().map_or(0, |p| p.start_unix_nano);
    let span = (last - first).max(1) as f64;
    let x_of = |ns: u64| {
        if t.points.len() < 2 {
            px(0.5)
        } else {
            px((ns - first) as f64 / span)
        }
    };
    axes(
        &mut s,
        &format!(
            "time from the first recommendation ({} per point)",
            crate::units::format_duration(std::time::Duration::from_nanos(t.bucket_ns))
        ),
        "agreement",
        false,
    );
    if t.points.len() > 1 {
        let _ = write!(
            s,
            r##"<text x="{}" y="{ty}" font-size="11" text-anchor="start">+0</text><text x="{}" y="{ty}" font-size="11" text-anchor="end">+{}</text>"##,
            px(0.0),
            px(1.0),
            crate::units::format_duration(std::time::Duration::from_nanos(last - first)),
            ty = H - MB + 16.0
        );
    }
    let mut line = Vec::new();
    for p in &t.points {
        let x = x_of(p.start_unix_nano);
        if let (Some(rate), Some(lo), Some(hi)) = (p.figures.rate, p.figures.lower, p.figures.upper)
        {
            line.push(format!("{x:.1},{:.1}", py(rate)));
            let _ = write!(
                s,
                r##"<line class="ci" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#9bb8ea" stroke-width="3"/><circle class="point" cx="{x:.1}" cy="{:.1}" r="3.5" fill="#2a6fdb" data-cases="{}"><title>+{}: {} of {} agreed ({:.1}%, 95% [{:.1}%, {:.1}%])</title></circle>"##,
                py(lo),
                py(hi),
                py(rate),
                p.figures.cases,
                crate::units::format_duration(std::time::Duration::from_nanos(
                    p.start_unix_nano - first
                )),
                p.figures.agreements,
                p.figures.cases,
                rate * 100.0,
                lo * 100.0,
                hi * 100.0
            );
        }
    }
    if line.len() > 1 {
        let _ = write!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#2a6fdb"/>"##,
            line.join(" ")
        );
    }
    if line.is_empty() {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="12" text-anchor="middle">no answered recommendation</text>"##,
            (ML + W - MR) / 2.0,
            (MT + H - MB) / 2.0
        );
    }
    s.push_str("</svg>");
    s
}

fn html_rate_cells(r: &Rate) -> String {
    format!(
        "<td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td>{}</td><td class=n>{}</td>",
        r.cases,
        r.agreements,
        pct(r.rate),
        interval(r),
        r.unanswered
    )
}

pub(super) fn html(r: &AgreementReport, title: &str) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}\
         td.n{{text-align:right}}figure{{display:inline-block;margin:0 2em 1em 0}}code{{font-size:90%}}</style>\
         </head><body><h1>{t}</h1>",
        t = esc(title)
    );
    let _ = write!(
        h,
        "<p id=\"summary\">{} recommendations, <strong>{}</strong> answered by a human, {} unanswered \
         (counted, not guessed); {} audit records read from a verified log{}.</p>",
        r.recommendations,
        r.overall.cases,
        r.overall.unanswered,
        r.records,
        if r.orphan_actions > 0 {
            format!(
                "; {} human actions whose recommendation is not in the log",
                r.orphan_actions
            )
        } else {
            String::new()
        }
    );
    if !r.policy_versions.is_empty() {
        let v: Vec<String> = r
            .policy_versions
            .iter()
            .map(|v| format!("<code>{}</code>", esc(v)))
            .collect();
        let _ = write!(
            h,
            "<p>Recommendations made under policy version {}.</p>",
            v.join(", ")
        );
    }
    h.push_str(
        "<h2>Agreement by task type and tool</h2><table id=\"groups\"><thead><tr><th>task type</th>\
         <th>tool</th><th>cases</th><th>agreed</th><th>rate</th><th>95% Wilson interval</th>\
         <th>unanswered</th></tr></thead><tbody>",
    );
    for g in &r.groups {
        let task = g.task_type.as_deref().unwrap_or("(none)");
        let _ = write!(
            h,
            "<tr data-task=\"{}\" data-tool=\"{}\"><td>{}</td><td>{}</td>{}</tr>",
            esc(task),
            esc(&g.tool),
            esc(task),
            esc(&g.tool),
            html_rate_cells(&g.figures)
        );
    }
    let _ = write!(
        h,
        "<tr data-task=\"(all)\"><th>all</th><th></th>{}</tr></tbody></table>",
        html_rate_cells(&r.overall)
    );

    let c = &r.calibration;
    let _ = write!(
        h,
        "<h2>Calibration</h2><p id=\"calibration\">{} answered cases with a confidence ({} without). \
         Brier score <strong>{}</strong> (0 is perfect; always saying 0.5 scores 0.25); largest gap \
         between a bin's mean confidence and its observed agreement: {}.</p>",
        c.cases,
        c.without_confidence,
        c.brier.map_or_else(|| "-".into(), |b| format!("{b:.4}")),
        pct(c.max_gap)
    );
    let _ = write!(
        h,
        "<figure>{}<figcaption>Reliability: each point is a confidence bin (area by cases); on the \
         dashed diagonal the agent is as often right as it says.</figcaption></figure>\
         <figure>{}<figcaption>Agreement over time, with 95% Wilson intervals.</figcaption></figure>",
        reliability_svg(r),
        timeline_svg(r)
    );

    h.push_str("<h2>Disagreements by kind</h2>");
    if r.catalogue.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str(
            "<table id=\"catalogue\"><thead><tr><th>tool</th><th>kind</th><th>argument / tool</th>\
             <th>count</th></tr></thead><tbody>",
        );
        for e in &r.catalogue {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td></tr>",
                esc(&e.tool),
                esc(&e.kind),
                esc(e.detail.as_deref().unwrap_or("")),
                e.count
            );
        }
        h.push_str("</tbody></table>");
    }
    if !r.disagreements.is_empty() {
        h.push_str(
            "<h2>Disagreements</h2><p>Values as the audit trail holds them (redacted under the \
             policy's marks).</p><table id=\"disagreements\"><thead><tr><th>recommendation</th>\
             <th>seq</th><th>task type</th><th>tool</th><th>confidence</th><th>what differed</th>\
             <th>human's note</th></tr></thead><tbody>",
        );
        for d in &r.disagreements {
            let _ = write!(
                h,
                "<tr data-rec=\"{}\"><td><code>{}</code></td><td class=n>{}</td><td>{}</td><td>{}</td>\
                 <td class=n>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.recommendation),
                esc(&d.recommendation),
                d.seq,
                esc(d.task_type.as_deref().unwrap_or("(none)")),
                esc(&d.tool),
                d.confidence
                    .map_or_else(|| "-".into(), |c| format!("{c:.2}")),
                esc(&comparison(&d.comparison)),
                esc(d.note.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</tbody></table>");
        if r.disagreements_omitted > 0 {
            let _ = write!(h, "<p>... and {} more.</p>", r.disagreements_omitted);
        }
    }
    h.push_str("</body></html>\n");
    h
}
