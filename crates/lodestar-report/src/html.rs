//! The report as one self-contained HTML page (inline CSS and SVG, no script, nothing
//! fetched): the North Star over time and against its target, the metric tree with
//! contributions, a retention heat map and the discovery ranking.
//!
//! Every number comes from the core (`compute`, `tree`, `targets`, `retention`, `discover`);
//! this module only lays them out. Numbers a reader may want to check are also written
//! exactly in `data-*` attributes (`data-metric`, `data-period`, `data-value`…), so a test or
//! a script can compare the page with `lodestar compute`.

use std::fmt::Write as _;

use chrono::NaiveDate;
use lodestar_core::discovery::Discovery;
use lodestar_core::format::{self, fixed, optional, percent, signed, signed_percent};
use lodestar_core::periods::{self, period_start};
use lodestar_core::retention::{DayMode, EventSpec, Mode, Retention, RetentionRequest};
use lodestar_core::targets::TargetStatus;
use lodestar_core::tree::{Link, MetricTree, TreeNode};
use lodestar_core::{Engine, MetricRequest, TreeRequest};

use crate::svg::{self, HeatCell, Line, escape};
use crate::{Options, Result, Voice, rules};

/// A section that could not be drawn, and how to get it.
#[derive(Debug)]
struct Note(String);

/// What the retention section shows.
#[derive(Debug)]
struct RetentionSection {
    request: RetentionRequest,
    result: Retention,
}

/// The whole page: every section computed, then laid out; an error if a computation fails
/// (a section that cannot be drawn for want of settings is a note instead).
pub async fn render(engine: &Engine, options: &Options, voice: &dyn Voice) -> Result<String> {
    let project = engine.project();
    let (period_grain, period) = match options.period {
        Some((grain, date)) => (grain, Some(date)),
        None => (None, None),
    };
    let tree = engine
        .tree(&TreeRequest {
            root: options.metric.clone(),
            grain: options.grain.or(period_grain),
            period,
            compare: options.compare,
        })
        .await?;
    let grain = tree.grain;

    let mut html = String::new();
    let names: Vec<&str> = tree.roots.iter().map(|r| r.metric.as_str()).collect();
    let title = format!("Lodestar report: {}", names.join(", "));
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title><style>{STYLE}</style></head><body>\n<h1>{}</h1>\n<p class=\"meta\">Project <code>{}</code>, by {grain}. Generated {} UTC by lodestar {}.</p>\n",
        escape(&title),
        escape(&title),
        escape(&project.path.display().to_string()),
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        env!("CARGO_PKG_VERSION"),
    );

    for root in &tree.roots {
        let name = &root.metric;
        let metric = project.metric(name)?;
        let _ = write!(
            html,
            "<section class=\"nsm\" data-metric=\"{}\">",
            escape(name)
        );
        let _ = write!(html, "<h2>{}</h2>", escape(name));
        if let Some(description) = &metric.description {
            let _ = write!(html, "<p>{}</p>", escape(description));
        }
        let table = engine
            .compute(&MetricRequest::new([name.as_str()], grain))
            .await?;
        let series: Vec<(NaiveDate, Option<f64>)> = table
            .periods()
            .into_iter()
            .zip(table.values(name).unwrap_or_default())
            .collect();
        let points: Vec<(NaiveDate, f64)> = series
            .iter()
            .filter_map(|(d, v)| Some((*d, (*v)?)))
            .collect();
        html.push_str(&format!("<h3>{} by {grain}</h3>", escape(name)));
        let dates: Vec<NaiveDate> = points.iter().map(|(d, _)| *d).collect();
        let complete = rules::complete_count(&dates, tree.period, options.period.is_some());
        let mut lines = vec![Line {
            label: name.clone(),
            class: "actual",
            points: points[..complete].to_vec(),
        }];
        if complete < points.len() {
            lines.push(Line {
                label: "incomplete period".into(),
                class: "partial",
                points: points[complete.saturating_sub(1)..].to_vec(),
            });
        }
        html.push_str(&svg::line_chart(&format!("{name} by {grain}"), &lines));
        html.push_str("<details><summary>The numbers</summary><table class=\"series\"><thead><tr><th>period</th><th>value</th></tr></thead><tbody>");
        for (date, value) in &series {
            let _ = write!(
                html,
                "<tr data-metric=\"{}\" data-period=\"{date}\" data-value=\"{}\"><td>{}</td><td class=\"num\">{}</td></tr>",
                escape(name),
                exact(*value),
                escape(&periods::label(*date, grain)),
                optional(*value)
            );
        }
        html.push_str("</tbody></table></details>");
        if metric.target.is_some() {
            for status in engine.targets(Some(name)).await? {
                target_section(engine, &status, &mut html).await?;
            }
        }
        html.push_str("</section>\n");
    }

    tree_section(&tree, &mut html);

    let retention = match retention_request(engine, options) {
        Some(request) => {
            let result = engine.retention(&request).await?;
            Ok(RetentionSection { request, result })
        }
        None => Err(Note(voice.no_retention())),
    };
    retention_html(&retention, &mut html);

    let discovery = discovery(engine, options, voice, retention.as_ref().ok()).await?;
    discovery_html(&discovery, options.top, &mut html);

    let _ = write!(
        html,
        "<footer>Made with <code>{}</code>. Every number on this page comes from the same engine as <code>lodestar compute</code>; the tables under “The numbers” hold them exactly.</footer>\n</body></html>\n",
        escape(voice.made_with())
    );
    Ok(html)
}

/// The metric against its target, at the target's period: actuals, the pace asked for, the
/// trend's projection and the target itself.
async fn target_section(engine: &Engine, status: &TargetStatus, html: &mut String) -> Result<()> {
    let target = &status.target;
    let grain = target.period;
    let by_period = period_start(target.by, grain, engine.project().week_start);
    let mut request = MetricRequest::new([status.metric.as_str()], grain);
    request.from = target.start;
    request.to = status.period;
    let points: Vec<(NaiveDate, f64)> = if status.period.is_some() {
        let table = engine.compute(&request).await?;
        table
            .periods()
            .into_iter()
            .zip(table.values(&status.metric).unwrap_or_default())
            .filter_map(|(d, v)| Some((d, v?)))
            .collect()
    } else {
        Vec::new()
    };
    let _ = write!(
        html,
        "<h3>Against its target</h3><p class=\"target\" data-metric=\"{}\" data-target=\"{}\" data-status=\"{}\">Target: {} per {grain} by {}. Last complete {grain}: <b>{}</b>, {} expected by now on pace; the trend projects <b>{}</b>. Status: <span class=\"status {}\">{}</span>.</p>",
        escape(&status.metric),
        target.value,
        status.status.as_str(),
        format::number(target.value),
        target.by,
        optional(status.actual),
        optional(status.expected),
        optional(status.projected),
        status.status.as_str().replace(' ', "-"),
        status.status.as_str(),
    );
    let mut lines = vec![Line {
        label: format!("{} by {grain}", status.metric),
        class: "actual",
        points: points.clone(),
    }];
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        lines.push(Line {
            label: format!("target {}", format::number(target.value)),
            class: "target",
            points: vec![(first.0, target.value), (by_period, target.value)],
        });
        lines.push(Line {
            label: "pace to the target".into(),
            class: "pace",
            points: vec![*first, (by_period, target.value)],
        });
        if let Some(projected) = status.projected {
            lines.push(Line {
                label: "trend".into(),
                class: "trend",
                points: vec![*last, (by_period, projected)],
            });
        }
    }
    html.push_str(&svg::line_chart(
        &format!("{} against its target", status.metric),
        &lines,
    ));
    Ok(())
}

fn tree_section(tree: &MetricTree, html: &mut String) {
    html.push_str("<section class=\"tree\"><h2>The metric tree</h2>");
    match (tree.period, tree.previous_period) {
        (Some(period), Some(previous)) => {
            let _ = write!(
                html,
                "<p>{} {} compared with {}. A contribution is the part of the root's change that comes through that metric, where a formula links it.</p>",
                tree.grain,
                escape(&periods::label(period, tree.grain)),
                escape(&periods::label(previous, tree.grain)),
            );
        }
        _ => html.push_str("<p>No complete period with data.</p>"),
    }
    html.push_str("<table class=\"tree\"><thead><tr><th>metric</th><th>value</th><th>previous</th><th>change</th><th>change %</th><th>contribution to the root</th><th>how</th></tr></thead><tbody>");
    fn row(node: &TreeNode, parent: Option<&str>, depth: usize, html: &mut String) {
        let how = match &node.link {
            Link::Leaf => String::new(),
            Link::NotQuantified => "inputs not quantified (no formula)".into(),
            Link::Undecomposable => "formula not evaluable".into(),
            Link::Decomposed { method, residual } if *residual != 0.0 => {
                format!(
                    "{}, residual {}",
                    method.as_str(),
                    format::number(*residual)
                )
            }
            Link::Decomposed { method, .. } => method.as_str().to_string(),
        };
        let _ = write!(
            html,
            "<tr data-metric=\"{}\" data-parent=\"{}\" data-depth=\"{depth}\" data-value=\"{}\" data-previous=\"{}\" data-change=\"{}\" data-contribution=\"{}\"><td style=\"padding-left:{}em\">{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&node.metric),
            escape(parent.unwrap_or("")),
            exact(node.value),
            exact(node.previous),
            exact(node.change()),
            exact(node.contribution),
            0.4 + 1.5 * depth as f64,
            if depth > 0 { "└ " } else { "" },
            escape(&node.metric),
            optional(node.value),
            optional(node.previous),
            signed(node.change()),
            signed_percent(node.relative_change()),
            signed(node.contribution),
            escape(&how),
        );
        for guardrail in &node.guardrails {
            let _ = write!(
                html,
                "<tr class=\"guardrail{}\"><td style=\"padding-left:{}em\">guardrail {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td colspan=\"4\">{}</td></tr>",
                if guardrail.breached { " breached" } else { "" },
                1.9 + 1.5 * depth as f64,
                escape(&guardrail.rule.metric),
                optional(guardrail.value),
                optional(guardrail.previous),
                if guardrail.breached {
                    "⚠ worsened beyond its threshold while the metric rose"
                } else {
                    "holding"
                },
            );
        }
        for input in &node.inputs {
            row(input, Some(&node.metric), depth + 1, html);
        }
    }
    for root in &tree.roots {
        row(root, None, 0, html);
    }
    html.push_str("</tbody></table></section>\n");
}

/// The retention request of the options, else of the project's first retention metric
/// ([`rules::retention_events`]); `None` when there is neither.
fn retention_request(engine: &Engine, options: &Options) -> Option<RetentionRequest> {
    let (cohort, activity) = rules::retention_events(
        engine.project(),
        options.retention.as_ref(),
        &options.entity,
    )?;
    Some(RetentionRequest {
        cohort,
        activity,
        grain: rules::retention_grain(options.retention_grain, options.grain),
        mode: Mode::On,
        days: DayMode::Rolling,
        periods: Some(options.retention_periods),
        value: None,
        from: None,
        to: None,
    })
}

fn spec_text(spec: &EventSpec) -> String {
    format!("{}.{}.{}", spec.table.source, spec.table.table, spec.time)
}

fn retention_html(section: &Result<RetentionSection, Note>, html: &mut String) {
    html.push_str("<section class=\"retention\"><h2>Retention</h2>");
    match section {
        Err(Note(note)) => {
            let _ = write!(html, "<p class=\"note\">{}</p>", escape(note));
        }
        Ok(RetentionSection { request, result }) => {
            let _ = write!(
                html,
                "<p>Of the entities (<code>{}</code>) whose first <code>{}</code> falls in each {}, the share active (<code>{}</code>) in {} N after it, counted in rolling windows from each one's own start. Blank: the cohort is too young for that {} to have ended.</p>",
                escape(&request.cohort.entity),
                escape(&spec_text(&request.cohort)),
                result.grain,
                escape(&spec_text(&request.activity)),
                result.grain,
                result.grain,
            );
            let mut cohorts: Vec<(NaiveDate, i64)> = result
                .cells
                .iter()
                .map(|c| (c.cohort, c.cohort_size))
                .collect();
            cohorts.dedup();
            let rows: Vec<String> = cohorts.iter().map(|(d, n)| format!("{d} ({n})")).collect();
            let cells: Vec<HeatCell> = result
                .cells
                .iter()
                .filter_map(|c| {
                    let row = cohorts.iter().position(|(d, _)| *d == c.cohort)?;
                    let column = result.columns.iter().position(|p| *p == c.period)?;
                    Some(HeatCell {
                        row,
                        column,
                        value: c.rate.filter(|_| c.eligible),
                        text: c
                            .rate
                            .filter(|_| c.eligible)
                            .map_or_else(String::new, format::whole_percent),
                        attributes: format!(
                            "data-cohort=\"{}\" data-period=\"{}\" data-rate=\"{}\"",
                            c.cohort,
                            escape(&c.period),
                            exact(c.rate.filter(|_| c.eligible)),
                        ),
                    })
                })
                .collect();
            html.push_str("<div class=\"scroll\">");
            html.push_str(&svg::heat_map(
                &format!("retention by {} cohort", result.grain),
                &rows,
                &result.columns,
                &cells,
            ));
            html.push_str("</div>");
        }
    }
    html.push_str("</section>\n");
}

/// Discovery, onboarding users as [`rules::discovery_onboarding`] says. Onboarded at the
/// retention cohort by default, a failure becomes a note (the project may have no activity
/// table to search); with `onboarded` given, it is an error.
async fn discovery(
    engine: &Engine,
    options: &Options,
    voice: &dyn Voice,
    retention: Option<&RetentionSection>,
) -> Result<Result<Discovery, Note>> {
    let events = retention.map(|r| (r.request.cohort.clone(), r.request.activity.clone()));
    let Some(mut request) = rules::discovery_onboarding(
        engine.project(),
        options.onboarded.as_deref(),
        events.as_ref(),
        &options.entity,
    ) else {
        return Ok(Err(Note(voice.no_onboarding())));
    };
    request.within = options.within;
    request.retained = options.retained;
    request.window = options.window;
    request.reveal_values = options.reveal_values;
    request.support_floor = options.support_floor;
    match engine.discover(&request).await {
        Ok(discovery) => Ok(Ok(discovery)),
        Err(e) if options.onboarded.is_none() => {
            let e = e.spelled(voice.spelling());
            tracing::warn!("discovery left out of the report: {e}");
            Ok(Err(Note(voice.discovery_failed(&e))))
        }
        Err(e) => Err(e.into()),
    }
}

fn discovery_html(discovery: &Result<Discovery, Note>, top: usize, html: &mut String) {
    html.push_str("<section class=\"discovery\"><h2>Value moments</h2>");
    match discovery {
        Err(Note(note)) => {
            let _ = write!(html, "<p class=\"note\">{}</p>", escape(note));
        }
        Ok(d) => {
            let _ = write!(
                html,
                "<p>Users {}; retained means {}. Early activities ranked by their correlation (phi) with being retained, among {} users old enough to judge. <b>Correlation, not causation</b>: test a candidate before making it a goal.</p>",
                escape(&d.setup.onboarding_text()),
                escape(&d.setup.retention_text()),
                d.training.users,
            );
            if d.candidates.is_empty() {
                html.push_str("<p class=\"note\">No candidate had enough users among doers and among the others.</p>");
            } else {
                html.push_str("<table class=\"ranking\"><thead><tr><th>#</th><th>activity</th><th>at least</th><th>did it</th><th>retained if did</th><th>if not</th><th>lift</th><th>phi</th></tr></thead><tbody>");
                let max_phi = d
                    .candidates
                    .iter()
                    .filter_map(|c| c.table.phi())
                    .fold(0.0_f64, |a, p| a.max(p.abs()))
                    .max(1e-9);
                for (i, c) in d.candidates.iter().take(top).enumerate() {
                    let t = &c.table;
                    let phi = t.phi();
                    let bar = phi.map_or(0.0, |p| p.abs() / max_phi * 80.0);
                    let _ = write!(
                        html,
                        "<tr data-activity=\"{}\" data-at-least=\"{}\" data-phi=\"{}\"><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\"><svg width=\"84\" height=\"10\" xmlns=\"http://www.w3.org/2000/svg\"><rect class=\"{}\" width=\"{bar:.1}\" height=\"10\"/></svg> {}</td></tr>",
                        escape(&c.activity),
                        c.at_least,
                        exact(phi),
                        i + 1,
                        escape(&c.activity),
                        c.at_least,
                        t.doers(),
                        percent(t.retention_did()),
                        percent(t.retention_not()),
                        fixed(t.lift(), 2),
                        if phi.unwrap_or(0.0) < 0.0 {
                            "neg"
                        } else {
                            "pos"
                        },
                        fixed(phi, 3),
                    );
                }
                html.push_str("</tbody></table>");
            }
            let _ = write!(
                html,
                "<pre class=\"summary\">{}</pre>",
                escape(&d.summary(3))
            );
        }
    }
    html.push_str("</section>\n");
}

/// The exact value for a `data-*` attribute (Rust's shortest round-trip form), empty for none.
fn exact(value: Option<f64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1f24;max-width:980px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
.meta,footer{color:#57606a;font-size:.9em}footer{margin-top:3em}
table{border-collapse:collapse;margin:.6em 0}th,td{padding:.25em .7em;border-bottom:1px solid #eaeef2;text-align:left}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
details{margin:.5em 0}summary{cursor:pointer;color:#0969da}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:.6em .8em;border-radius:4px}
.status.on-track{color:#1a7f37;font-weight:600}.status.at-risk{color:#9a6700;font-weight:600}.status.off-track{color:#cf222e;font-weight:600}
tr.guardrail td{color:#57606a;font-size:.9em}tr.guardrail.breached td{color:#cf222e}
.scroll{overflow-x:auto}pre.summary{white-space:pre-wrap;background:#f6f8fa;padding:.8em;border-radius:4px}
svg text{font:11px system-ui,sans-serif;fill:#1b1f24}svg .tick{fill:#57606a}
svg .grid{stroke:#eaeef2}svg .axis{stroke:#8c959f}
svg polyline{fill:none;stroke-width:2}svg line.actual,svg polyline.actual{stroke:#0969da;stroke-width:2}svg circle.actual{fill:#0969da}
svg .target{stroke:#cf222e;stroke-width:1.5;stroke-dasharray:6 4}svg .pace{stroke:#8c959f;stroke-width:1.5;stroke-dasharray:2 3}
svg polyline.partial,svg line.partial{stroke:#0969da;stroke-width:1.5;stroke-dasharray:3 3}svg circle.partial{fill:#fff;stroke:#0969da}
svg .trend{stroke:#bf8700;stroke-width:1.5;stroke-dasharray:8 3}
svg rect.pos{fill:#2da44e}svg rect.neg{fill:#cf222e}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values_round_trip() {
        assert_eq!(exact(Some(0.1 + 0.2)), "0.30000000000000004");
        assert_eq!(exact(Some(3.0)), "3");
        assert_eq!(exact(None), "");
    }
}
