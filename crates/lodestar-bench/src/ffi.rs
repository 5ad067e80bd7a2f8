//! `lodestar-bench ffi`: what the plugin boundary costs. The same table provider (the
//! `generate` connector's, crate lodestar-generate) is queried natively, linked into this
//! binary, and through its plugin library loaded by the real host code; the query is
//! scan-heavy (every row crosses the boundary). Runs alternate between the two, and medians
//! are compared. Both sides allocate with the same mimalloc build (the workspace's: mimalloc 2,
//! built for `dlopen`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use lodestar_connector_api::host;
use lodestar_core::datafusion::catalog::SchemaProvider;
use lodestar_core::datafusion::execution::TaskContextProvider;
use lodestar_core::datafusion::physical_plan::collect;
use lodestar_core::datafusion::prelude::SessionContext;
use lodestar_generate::{GenerateSchema, Settings};

use crate::median;

/// Every row is generated, crosses the boundary, and is filtered and aggregated.
const QUERY: &str = "SELECT count(*), sum(amount), max(ts) FROM gen.events WHERE kind = 'view'";

pub async fn ffi_overhead(rows: u64, runs: usize) -> anyhow::Result<()> {
    let mut settings = Settings::default();
    settings.rows = rows;
    settings.partitions = std::thread::available_parallelism().map_or(2, |n| n.get() as u64);

    let native = Arc::new(SessionContext::new());
    register(
        &native,
        Arc::new(GenerateSchema {
            settings: settings.clone(),
        }),
    )?;

    let plugin_ctx = Arc::new(SessionContext::new());
    let path = plugin_path()?;
    let plugin = host::load(&path).map_err(anyhow::Error::msg)?;
    let options = serde_json::json!({
        "rows": settings.rows,
        "partitions": settings.partitions,
    });
    let options = options.as_object().expect("an object").clone();
    let provider: Arc<dyn TaskContextProvider> =
        Arc::clone(&plugin_ctx) as Arc<dyn TaskContextProvider>;
    let codec = FFI_LogicalExtensionCodec::new_default(&provider);
    let schema = plugin
        .connect(&options, codec)
        .map_err(anyhow::Error::msg)?;
    register(&plugin_ctx, schema)?;

    println!(
        "ffi overhead: {rows} rows, {runs} runs each, plugin {}",
        path.display()
    );
    println!("query: {QUERY}");
    // Warm both paths (page in the library, size allocators) before measuring.
    let expected = run(&native).await?.1;
    let through_plugin = run(&plugin_ctx).await?.1;
    if expected != through_plugin {
        bail!("the two paths disagree:\n native: {expected}\n plugin: {through_plugin}");
    }
    let (mut native_runs, mut plugin_runs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        native_runs.push(run(&native).await?.0);
        plugin_runs.push(run(&plugin_ctx).await?.0);
    }
    let native_median = Timing::median(&mut native_runs);
    let plugin_median = Timing::median(&mut plugin_runs);
    let ratio = plugin_median.total.as_secs_f64() / native_median.total.as_secs_f64();
    println!();
    println!("| path    | median   | of which planning | rows/s      |");
    println!("|---------|----------|-------------------|-------------|");
    for (name, time) in [("native", native_median), ("plugin", plugin_median)] {
        println!(
            "| {name:<7} | {:>6.1}ms | {:>15.2}ms | {:>11.0} |",
            time.total.as_secs_f64() * 1000.0,
            time.planning.as_secs_f64() * 1000.0,
            rows as f64 / time.total.as_secs_f64()
        );
    }
    println!();
    println!("plugin / native = {ratio:.3} (target: at most 1.05)");
    Ok(())
}

/// The plugin built beside this binary (`cargo xtask bench` builds both in release mode).
fn plugin_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the binary has no directory")?;
    let path = dir.join(host::library_file_name("generate"));
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo xtask bench`, which builds it",
            path.display()
        );
    }
    Ok(path)
}

/// How long one run took, and how much of it went to planning (SQL to physical plan, which
/// through the plugin includes the table's `scan` across the boundary).
#[derive(Debug, Clone, Copy)]
struct Timing {
    total: Duration,
    planning: Duration,
}

impl Timing {
    /// The medians of both parts, each taken on its own.
    fn median(runs: &mut [Timing]) -> Timing {
        let mut totals: Vec<Duration> = runs.iter().map(|t| t.total).collect();
        let mut plannings: Vec<Duration> = runs.iter().map(|t| t.planning).collect();
        Timing {
            total: median(&mut totals),
            planning: median(&mut plannings),
        }
    }
}

/// The query's timing and its result, printed (so the two paths can be compared).
async fn run(ctx: &SessionContext) -> anyhow::Result<(Timing, String)> {
    let started = Instant::now();
    let plan = ctx.sql(QUERY).await?.create_physical_plan().await?;
    let planning = started.elapsed();
    let batches = collect(plan, ctx.task_ctx()).await?;
    let total = started.elapsed();
    let text = lodestar_core::datafusion::arrow::util::pretty::pretty_format_batches(&batches)?;
    Ok((Timing { total, planning }, text.to_string()))
}

/// Registers `schema` as `gen` in the context's default catalog.
fn register(ctx: &SessionContext, schema: Arc<dyn SchemaProvider>) -> anyhow::Result<()> {
    ctx.catalog("datafusion")
        .context("the default catalog exists")?
        .register_schema("gen", schema)?;
    Ok(())
}
