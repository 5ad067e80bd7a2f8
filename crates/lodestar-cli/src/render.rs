//! Text output for people: the metric list, the metric tree, segments, targets, retention.

use std::path::Path;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use lodestar_core::connect::{FILES_OPTIONS, plugins};
use lodestar_core::decompose::Method;
use lodestar_core::format::{bytes, optional, percent, signed_percent, thousands};
use lodestar_core::model::{MetricKind, Project};
use lodestar_core::periods::label;
use lodestar_core::retention::Retention;
use lodestar_core::targets::TargetStatus;
use lodestar_core::{Link, MetricTree, Scanned, SegmentAnalysis, SegmentMethod, TreeNode};

/// `lodestar list`.
pub fn list(project: &Project, json: bool) -> anyhow::Result<()> {
    if json {
        let metrics: Vec<serde_json::Value> = project
            .metrics
            .values()
            .map(|m| {
                serde_json::json!({
                    "name": m.name,
                    "kind": m.kind.name(),
                    "grain": m.grain.map(|g| g.to_string()),
                    "north_star": m.north_star,
                    "owner": m.owner,
                    "inputs": m.inputs,
                    "dimensions": m.dimensions,
                    "description": m.description,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&metrics)?);
        return Ok(());
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header([
            "metric",
            "kind",
            "grain",
            "north star",
            "owner",
            "inputs",
            "description",
        ]);
    for m in project.metrics.values() {
        let kind = match &m.kind {
            MetricKind::Cumulative(c) => match c.window_days {
                Some(days) => format!("cumulative {days}d"),
                None => "cumulative".into(),
            },
            other => other.name().into(),
        };
        table.add_row([
            m.name.clone(),
            kind,
            m.grain.map(|g| g.to_string()).unwrap_or_default(),
            if m.north_star {
                "yes".into()
            } else {
                String::new()
            },
            m.owner.clone().unwrap_or_default(),
            m.inputs.join(", "),
            m.description.clone().unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// `lodestar connectors`.
pub fn connectors(project_root: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let dirs = plugins::search_path(project_root);
    let found = plugins::find(&dirs);
    let mut rows = vec![serde_json::json!({
        "name": "files",
        "kind": "built-in",
        "version": env!("CARGO_PKG_VERSION"),
        "path": null,
        "options": FILES_OPTIONS,
        "error": null,
    })];
    for f in &found {
        rows.push(match &f.plugin {
            Ok(plugin) => serde_json::json!({
                "name": f.name,
                "kind": "plugin",
                "version": plugin.version,
                "datafusion_version": plugin.datafusion_version,
                "path": f.path,
                "options": plugin
                    .options_schema
                    .get("properties")
                    .and_then(|p| p.as_object())
                    .map(|p| p.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default(),
                "error": null,
            }),
            Err(e) => serde_json::json!({
                "name": f.name,
                "kind": "refused",
                "version": null,
                "path": f.path,
                "options": [],
                "error": e.to_string(),
                "hint": e.hint(),
            }),
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(["connector", "kind", "version", "options", "path / problem"]);
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    for row in &rows {
        let options: Vec<String> = row["options"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let location = match row["error"].as_str() {
            Some(error) => match row["hint"].as_str() {
                Some(hint) => format!("{error}\nhint: {hint}"),
                None => error.to_string(),
            },
            None => text(&row["path"]),
        };
        table.add_row([
            text(&row["name"]),
            text(&row["kind"]),
            text(&row["version"]),
            options.join(", "),
            location,
        ]);
    }
    println!("{table}");
    println!(
        "plugin search path: {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// `lodestar tree`: one metric per line, inputs indented under it.
pub fn tree(project: &Project, tree: &MetricTree) {
    match (tree.period, tree.previous_period) {
        (Some(period), Some(previous)) => println!(
            "{} {} compared with {}",
            tree.grain,
            label(period, tree.grain),
            label(previous, tree.grain)
        ),
        _ => println!("no data yet"),
    }
    for root in &tree.roots {
        println!();
        print_node(project, root, "", "");
    }
    let mut notes = Vec::new();
    for root in &tree.roots {
        collect_notes(root, &mut notes);
    }
    if !notes.is_empty() {
        println!();
        for note in notes {
            println!("{note}");
        }
    }
}

fn print_node(project: &Project, node: &TreeNode, first: &str, rest: &str) {
    let star = if node.north_star {
        " ★ north star"
    } else {
        ""
    };
    let owner = project.metrics[&node.metric]
        .owner
        .as_deref()
        .map(|o| format!("  [{o}]"))
        .unwrap_or_default();
    let share = match (
        node.contribution,
        node.inputs.is_empty() && first.is_empty(),
    ) {
        (Some(c), false) if !first.is_empty() => format!(
            "  → {}{} of the root's change",
            sign(c),
            optional(Some(c.abs()))
        ),
        _ => String::new(),
    };
    println!(
        "{first}{}{star}  {}{}{share}{owner}",
        node.metric,
        optional(node.value),
        change_text(node.change(), node.relative_change())
    );
    for g in &node.guardrails {
        let flag = if g.breached {
            "  ⚠ worsened beyond its threshold while this rose"
        } else {
            ""
        };
        let change = match (g.value, g.previous) {
            (Some(v), Some(p)) => change_text(Some(v - p), (p != 0.0).then(|| (v - p) / p.abs())),
            _ => String::new(),
        };
        println!(
            "{rest}  guardrail: {}  {}{change}{flag}",
            g.rule.metric,
            optional(g.value)
        );
    }
    match &node.link {
        Link::NotQuantified => {
            println!("{rest}  (no formula: the inputs' link to this change is not quantified)")
        }
        Link::Undecomposable => {
            println!("{rest}  (the formula cannot be evaluated for these values)")
        }
        Link::Decomposed { method, residual }
            if residual.abs() > 1e-9 * node.value.unwrap_or(1.0).abs().max(1.0) =>
        {
            println!(
                "{rest}  (split by {}; the formula misses {} of the change)",
                method.as_str(),
                optional(Some(*residual))
            )
        }
        _ => {}
    }
    let count = node.inputs.len();
    for (i, input) in node.inputs.iter().enumerate() {
        let last = i + 1 == count;
        let (branch, continuation) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        print_node(
            project,
            input,
            &format!("{rest}{branch}"),
            &format!("{rest}{continuation}"),
        );
    }
}

fn collect_notes(node: &TreeNode, notes: &mut Vec<String>) {
    if let Link::Decomposed { method, .. } = &node.link {
        let note = format!(
            "{}: change split between inputs by {}",
            node.metric,
            match method {
                Method::Difference => "difference (a sum of inputs)",
                Method::Lmdi => "LMDI (a product of inputs; log-mean weights)",
                Method::Shapley => "Shapley values (each input's average marginal effect)",
            }
        );
        notes.push(note);
    }
    for input in &node.inputs {
        collect_notes(input, notes);
    }
}

fn change_text(change: Option<f64>, relative: Option<f64>) -> String {
    match (change, relative) {
        (Some(change), Some(relative)) => {
            format!(
                "  ({}{}, {})",
                sign(change),
                optional(Some(change.abs())),
                signed_percent(Some(relative))
            )
        }
        (Some(change), None) => format!("  ({}{})", sign(change), optional(Some(change.abs()))),
        _ => String::new(),
    }
}

/// `lodestar targets`, and the targets under `lodestar tree`.
pub fn targets(statuses: &[TargetStatus]) {
    if statuses.is_empty() {
        println!("no metric has a target");
        return;
    }
    for s in statuses {
        let period = s
            .period
            .map(|p| label(p, s.target.period))
            .unwrap_or_else(|| "no complete period yet".into());
        println!(
            "target {}: {} per {} by {} — {}",
            s.metric,
            optional(Some(s.target.value)),
            s.target.period,
            s.target.by,
            s.status.as_str().to_uppercase()
        );
        println!(
            "  {period}: actual {}, expected {} by now, projected {} at the target date",
            optional(s.actual),
            optional(s.expected),
            optional(s.projected)
        );
    }
}

/// `lodestar retention`: the cohort triangle, rates in percent.
pub fn retention(result: &Retention, with_value: bool) {
    let mut table = Table::new();
    let mut header = vec!["cohort".to_string(), "size".to_string()];
    header.extend(
        result
            .columns
            .iter()
            .map(|c| format!("{} {c}", result.grain)),
    );
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    let mut cohorts: Vec<_> = result.cells.iter().map(|c| c.cohort).collect();
    cohorts.dedup();
    for cohort in cohorts {
        let cells: Vec<_> = result.cells.iter().filter(|c| c.cohort == cohort).collect();
        let mut row = vec![
            label(cohort, result.grain),
            cells[0].cohort_size.to_string(),
        ];
        row.extend(cells.iter().map(|c| match (c.rate, with_value, c.value) {
            (Some(rate), false, _) => percent(Some(rate)),
            (Some(rate), true, value) => format!("{} · {}", percent(Some(rate)), optional(value)),
            _ => String::new(),
        }));
        table.add_row(row);
    }
    println!("{table}");
    if let Some(mean) = mean(result.repeat_rates.iter().map(|(_, r)| *r)) {
        println!(
            "active again after their first event: {} of entities on average across cohorts",
            percent(Some(mean))
        );
    }
}

/// `lodestar segments`: the total's change, then each segment's part, largest first.
pub fn segments(analysis: &SegmentAnalysis) {
    let (Some(period), Some(previous)) = (analysis.period, analysis.previous_period) else {
        println!("no data yet");
        return;
    };
    let relative = match (analysis.change(), analysis.previous) {
        (Some(c), Some(p)) if p != 0.0 => Some(c / p.abs()),
        _ => None,
    };
    println!(
        "{} by {}: {} {} compared with {}",
        analysis.metric,
        analysis.dimension,
        analysis.grain,
        label(period, analysis.grain),
        label(previous, analysis.grain)
    );
    println!(
        "total {}{}",
        optional(analysis.value),
        change_text(analysis.change(), relative)
    );
    let ratio = analysis.method == SegmentMethod::RateMix;
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    let mut header = vec![
        analysis.dimension.as_str(),
        "value",
        "previous",
        "change",
        "part",
        "share",
    ];
    if ratio {
        header.extend(["rate effect", "mix effect"]);
    }
    table.set_header(header);
    let total = analysis.change().filter(|c| *c != 0.0);
    for s in &analysis.segments {
        let share = match (s.contribution, total) {
            (Some(c), Some(t)) => percent(Some(c / t)),
            _ => "–".into(),
        };
        let mut row = vec![
            s.segment.clone().unwrap_or_else(|| "(none)".into()),
            optional(s.value),
            optional(s.previous),
            optional(s.change()),
            optional(s.contribution),
            share,
        ];
        if ratio {
            row.extend([optional(s.rate_effect), optional(s.mix_effect)]);
        }
        table.add_row(row);
    }
    println!("{table}");
    match analysis.residual() {
        Some(r) if r.abs() > 1e-9 * analysis.value.unwrap_or(1.0).abs().max(1.0) => println!(
            "the segments' parts leave {} of the change unexplained: segments overlap (an entity in several of them) or the metric does not add up over them",
            optional(Some(r))
        ),
        _ => {}
    }
    if ratio {
        println!(
            "rate effect: the segment's own ratio moved; mix effect: its share of the denominator moved"
        );
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn sign(x: f64) -> &'static str {
    if x < 0.0 { "-" } else { "+" }
}

/// The scans of a request (`compute --explain`): per scan its table, metrics, what it read and
/// its SQL; with `times`, how long it took.
pub fn scans(scans: &[Scanned], times: bool) {
    let read = |value: Option<u64>, show: fn(u64) -> String| value.map_or("–".to_string(), show);
    for (i, scan) in scans.iter().enumerate() {
        println!(
            "scan {} of {}: {} ({})",
            i + 1,
            scans.len(),
            scan.table,
            scan.metrics.join(", ")
        );
        let mut line = format!(
            "  read: {} rows, {}",
            read(scan.read.rows, thousands),
            read(scan.read.bytes, bytes)
        );
        if times {
            line.push_str(&format!(", {} ms", scan.read.elapsed.as_millis()));
        }
        println!("{line}");
        let queries: Vec<&str> = scan.sql.split(";\n").collect();
        if queries.len() > 1 {
            println!(
                "  {} queries, one per chunk of whole periods, each over its own time range; the first:",
                queries.len()
            );
        }
        println!("  {}", queries[0].replace('\n', "\n  "));
    }
    let total = |pick: fn(&Scanned) -> Option<u64>| -> Option<u64> { scans.iter().map(pick).sum() };
    let mut line = format!(
        "{} scan{}: {} rows, {}",
        scans.len(),
        if scans.len() == 1 { "" } else { "s" },
        read(total(|s| s.read.rows), thousands),
        read(total(|s| s.read.bytes), bytes)
    );
    if times {
        let elapsed: std::time::Duration = scans.iter().map(|s| s.read.elapsed).sum();
        line.push_str(&format!(", {} ms", elapsed.as_millis()));
    }
    println!("{line}");
}
