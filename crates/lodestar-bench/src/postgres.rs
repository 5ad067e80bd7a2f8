//! `lodestar-bench postgres`: how fast the Postgres connector moves rows, against `psql \copy`
//! of the same rows. A throwaway cluster (lodestar-testkit) gets a table of generated events;
//! both sides read every row and column of it — psql as text COPY into /dev/null, Lodestar
//! through the plugin (binary COPY over parallel ctid ranges, decoded into Arrow) — and the row
//! counts are checked equal before timing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use lodestar_core::{Engine, config};
use lodestar_testkit::postgres::Database;

use crate::median;

const QUERY: &str = "SELECT * FROM pg.events";

pub async fn copy_rate(rows: u64, runs: usize) -> anyhow::Result<()> {
    let db = Database::new("bench");
    db.run(&format!(
        "CREATE TABLE events (
             id bigint PRIMARY KEY,
             user_id bigint NOT NULL,
             kind text NOT NULL,
             amount numeric(12, 2),
             happened_at timestamptz NOT NULL
         );
         INSERT INTO events
         SELECT i, i % 50000, (ARRAY['view', 'click', 'purchase'])[1 + i % 3],
                CASE WHEN i % 3 = 2 THEN (i % 10000) / 100.0 END,
                timestamptz '2026-01-01 00:00+00' + i * interval '1 second'
         FROM generate_series(1, {rows}) AS i;
         VACUUM ANALYZE events;"
    ));
    let dir = tempfile::tempdir()?;
    let project = dir.path().join("lodestar.yaml");
    fs_err::write(
        &project,
        format!(
            "sources:\n  pg: {{ connector: postgres, url: \"{}\", tls: disable }}\nmetrics: {{}}\n",
            db.url()
        ),
    )?;
    let engine = Engine::open(config::load(&project)?).await?;

    println!("postgres: {rows} rows of 5 columns, {runs} runs each");
    // Warm both (the server's buffers, the plugin's pool) and check they see the same rows.
    let lodestar_rows = lodestar_read(&engine).await?.1;
    let psql_rows = psql_copy(&db)?.1;
    if lodestar_rows != rows || psql_rows != rows {
        bail!("expected {rows} rows; Lodestar read {lodestar_rows}, psql {psql_rows}");
    }
    let (mut lodestar, mut psql) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        lodestar.push(lodestar_read(&engine).await?.0);
        psql.push(psql_copy(&db)?.0);
    }
    let (lodestar, psql) = (median(&mut lodestar), median(&mut psql));
    println!();
    println!("| reader                      | median    | rows/s      |");
    println!("|-----------------------------|-----------|-------------|");
    for (name, time) in [
        ("lodestar (postgres plugin)", lodestar),
        ("psql \\copy to /dev/null", psql),
    ] {
        println!(
            "| {name:<27} | {:>7.1}ms | {:>11.0} |",
            time.as_secs_f64() * 1000.0,
            rows as f64 / time.as_secs_f64()
        );
    }
    println!();
    println!(
        "lodestar rows/s / psql rows/s = {:.2}",
        psql.as_secs_f64() / lodestar.as_secs_f64()
    );
    Ok(())
}

/// Streams every row through the plugin, counting them (memory stays a batch or so).
async fn lodestar_read(engine: &Engine) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let mut stream = engine.sql(QUERY).await?.execute_stream().await?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch?.num_rows() as u64;
    }
    Ok((started.elapsed(), rows))
}

/// `psql -c "\copy (SELECT * FROM events) TO '/dev/null'"`, and the row count it reports.
fn psql_copy(db: &Database) -> anyhow::Result<(Duration, u64)> {
    let started = Instant::now();
    let output = db
        .psql_command()
        .args(["-c", "\\copy (SELECT * FROM events) TO '/dev/null'"])
        .stdin(Stdio::null())
        .output()
        .context("running psql")?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    // psql prints `COPY <rows>`.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows = stdout
        .trim()
        .strip_prefix("COPY ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected psql output {stdout:?}"))?;
    Ok((elapsed, rows))
}
