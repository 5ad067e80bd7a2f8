//! `lodestar-bench tree`: the metric tree computed as Lodestar does, in one request whose
//! metrics share a scan per table, against the same metrics computed one request each (what
//! a hand-written query per metric does). Both give the same numbers, checked before timing;
//! the table shows the scans each way and their medians.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lodestar_core::{Compare, Engine, MetricRequest, MetricTree, TreeNode, TreeRequest, config};

use crate::median;

pub async fn tree_scans(project: &Path, runs: usize) -> anyhow::Result<()> {
    let project =
        config::load(project).with_context(|| format!("loading {}", project.display()))?;
    let engine = Engine::open(project).await?;
    let request = TreeRequest::default();
    // Warm the file listings and caches both ways before measuring.
    let tree = engine.tree(&request).await?;
    let (Some(period), Some(previous)) = (tree.period, tree.previous_period) else {
        bail!("the project has no data to compute a tree from");
    };
    // Every metric the tree shows, guardrails included, with its value in the period.
    let mut nodes = Vec::new();
    for root in &tree.roots {
        walk(root, &mut nodes);
    }
    let per_metric = |name: &str| {
        let mut r = MetricRequest::new([name], tree.grain);
        r.from = Some(period.min(previous));
        r.to = Some(period.max(previous));
        r
    };
    let mut separate_scans = 0;
    for (metric, expected) in &nodes {
        let table = engine.compute(&per_metric(metric)).await?;
        separate_scans += table.scans.len();
        let at = table.periods().iter().position(|p| *p == period);
        let value = table.values(metric).and_then(|v| at.and_then(|i| v[i]));
        if !same(value, *expected) {
            bail!("`{metric}` differs: {expected:?} in the tree, {value:?} alone");
        }
    }

    // Timed like for like: both ways compute the same two periods, already known.
    let request = TreeRequest {
        period: Some(period),
        compare: Compare::Period(previous),
        ..request
    };
    let (mut fused, mut separate) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        let again: MetricTree = engine.tree(&request).await?;
        fused.push(started.elapsed());
        debug_assert_eq!(again.roots, tree.roots);
        let started = Instant::now();
        for (metric, _) in &nodes {
            engine.compute(&per_metric(metric)).await?;
        }
        separate.push(started.elapsed());
    }
    let (fused, separate) = (median(&mut fused), median(&mut separate));
    println!(
        "metric tree: {} metrics, {} {} against {}, {runs} runs each",
        nodes.len(),
        tree.grain,
        period,
        previous
    );
    println!();
    println!("| how                      | scans | median    |");
    println!("|--------------------------|-------|-----------|");
    row("one request (Lodestar)", tree.scans.len(), fused);
    row("one request per metric", separate_scans, separate);
    println!();
    println!(
        "one request / per metric = {:.3}",
        fused.as_secs_f64() / separate.as_secs_f64()
    );
    Ok(())
}

fn row(name: &str, scans: usize, time: Duration) {
    println!(
        "| {name:<24} | {scans:>5} | {:>7.1}ms |",
        time.as_secs_f64() * 1000.0
    );
}

fn walk<'t>(node: &'t TreeNode, out: &mut Vec<(&'t str, Option<f64>)>) {
    out.push((&node.metric, node.value));
    for guardrail in &node.guardrails {
        if !out.iter().any(|(m, _)| *m == guardrail.rule.metric) {
            out.push((&guardrail.rule.metric, guardrail.value));
        }
    }
    for input in &node.inputs {
        walk(input, out);
    }
}

fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        (None, None) => true,
        _ => false,
    }
}
