//! Bad data and a full disk, as a user meets them (docs/reliability.md is the catalogue):
//! corrupt Parquet in a `files` source is an error naming the file; a write that fails
//! half-way — simulated with a file-size limit, which fails `write` with `EFBIG` as a full
//! disk fails it with `ENOSPC` — leaves the previous report, output file or cache file intact
//! byte for byte, and no temporary file behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use lodestar_core::datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use lodestar_core::datafusion::arrow::datatypes::{DataType, Field, Schema};
use lodestar_core::datafusion::parquet::arrow::ArrowWriter;

use crate::refresh::{append_a_day, cached_example};
use crate::support::{Run, Scratch, Table, example_project, lodestar_project, test_dir};

/// Runs `cmd` (a `lodestar` command) under `sh` with a file-size limit of `blocks` (`ulimit
/// -f`; dash counts 512-byte blocks). `SIGXFSZ` is ignored first, and an ignored signal stays
/// ignored across `exec`, so a write past the limit fails with `EFBIG` instead of killing
/// the process: what a program sees when the disk is full.
fn with_file_size_limit(cmd: &Command, blocks: u32) -> Run {
    let mut limited = Command::new("sh");
    limited
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f \"$1\"; shift; exec \"$@\"")
        .arg("sh")
        .arg(blocks.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (name, value) in cmd.get_envs() {
        match value {
            Some(value) => limited.env(name, value),
            None => limited.env_remove(name),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        limited.current_dir(dir);
    }
    Run::of(&mut limited)
}

/// The names of the files in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs_err::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file of `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    names(dir)
        .into_iter()
        .map(|name| {
            let bytes = fs_err::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn a_full_disk_while_writing_a_report_or_an_output_file_leaves_the_previous_file() {
    let shop = Scratch::copy_of(&test_dir("fixtures/shop"));
    let example = example_project();
    let out = Scratch::empty();
    let report = out.path().join("report.html");
    let csv = out.path().join("revenue.csv");
    let report_args = ["report", "--output", report.to_str().unwrap()];
    // Six months of days by country: far more than the limit below.
    let csv_args = [
        "compute",
        "nights_booked",
        "bookings",
        "--grain",
        "day",
        "--by",
        "country",
        "--format",
        "csv",
        "--output",
        csv.to_str().unwrap(),
    ];
    Run::of(&mut lodestar_project(&shop.project(), report_args)).success();
    Run::of(&mut lodestar_project(example, csv_args)).success();
    // The previous files, told apart from what the next run would write.
    fs_err::write(&report, "<p>the previous report</p>\n").unwrap();
    fs_err::write(&csv, "period,revenue\nthe previous numbers\n").unwrap();
    let before = contents(out.path());

    for (project, args) in [
        (shop.project(), &report_args[..]),
        (example.to_path_buf(), &csv_args[..]),
    ] {
        let run = with_file_size_limit(&lodestar_project(&project, args), 2);
        assert_eq!(run.code, Some(1), "{run}");
        let written = args.last().unwrap();
        assert!(
            run.stderr.contains(&format!("could not write {written}")),
            "{run}"
        );
        assert!(run.stderr.contains("File too large"), "{run}");
        assert!(run.stderr.contains("hint: the disk may be full"), "{run}");
        assert_eq!(
            contents(out.path()),
            before,
            "the previous files changed\n{run}"
        );
    }
}

#[test]
fn a_full_disk_while_writing_the_cache_keeps_its_files_and_the_numbers_right() {
    let project = cached_example();
    let path = project.project();
    let args = [
        "compute",
        "nights_booked",
        "bookings",
        "--grain",
        "day",
        "--from",
        "2026-08-01",
        "--format",
        "csv",
    ];
    Run::of(&mut lodestar_project(&path, args)).success();
    let cache = project.path().join(".lodestar-cache");
    let before = contents(&cache);
    assert!(
        before.keys().any(|name| name.ends_with(".parquet")),
        "{before:?}"
    );

    // One more day closes one more daily period, so the entries are written again: into
    // 1 KiB at most, which no entry fits.
    append_a_day(project.path());
    let expected = Run::of(&mut lodestar_project(
        &path,
        args.iter().copied().chain(["--no-cache"]),
    ))
    .success();
    let run = with_file_size_limit(&lodestar_project(&path, args), 2);
    assert_eq!(
        run.code,
        Some(0),
        "a cache that cannot be written costs only time\n{run}"
    );
    assert_eq!(run.stdout, expected.stdout, "{run}");
    assert!(run.stderr.contains("cannot write cache file"), "{run}");
    assert!(run.stderr.contains("File too large"), "{run}");
    let after = contents(&cache);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "no file added or left behind\n{run}"
    );
    for (name, bytes) in &before {
        if name.ends_with(".parquet") {
            assert!(after[name] == *bytes, "{name} changed\n{run}");
        }
    }

    // Without the limit, the cache catches up and the numbers stay right.
    let again = Run::of(&mut lodestar_project(&path, args)).success();
    assert_eq!(again.stdout, expected.stdout, "{again}");
    assert!(!again.stderr.contains("cache file"), "{again}");
}

/// Paid orders: 10 rows on 2026-03-02..=2026-03-11, one a day.
fn orders_parquet() -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("ordered_at", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
    ]));
    let days: Vec<String> = (2..=11)
        .map(|d| format!("2026-03-{d:02}T10:00:00"))
        .collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(1..=10)),
            Arc::new(StringArray::from_iter_values(days)),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                "paid", 10,
            ))),
        ],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

/// A project whose table `app.orders` is the folder `data/orders` holding `part-0.parquet`
/// (good) and `part-1.parquet` (`bad`).
fn orders_project(bad: &[u8]) -> (Scratch, PathBuf) {
    let dir = Scratch::empty();
    let orders = dir.path().join("data/orders");
    fs_err::create_dir_all(&orders).unwrap();
    fs_err::write(orders.join("part-0.parquet"), orders_parquet()).unwrap();
    let bad_file = orders.join("part-1.parquet");
    fs_err::write(&bad_file, bad).unwrap();
    fs_err::write(
        dir.project(),
        "sources:\n  app: { connector: files, path: data }\nmetrics:\n  orders: { table: app.orders, time: ordered_at, measure: count(*), filter: \"status = 'paid'\" }\n",
    )
    .unwrap();
    (dir, bad_file)
}

#[test]
fn corrupt_parquet_in_a_files_source_is_an_error_naming_the_file() {
    let good = orders_parquet();
    // Sanity: the good file alone gives the hand count, one order a day.
    let (dir, bad_file) = orders_project(&good);
    fs_err::remove_file(&bad_file).unwrap();
    let run = Run::of(&mut lodestar_project(
        &dir.project(),
        ["compute", "orders", "--grain", "month", "--format", "csv"],
    ))
    .success();
    let table = Table::parse(&run.stdout).unwrap();
    assert_eq!(table.column("orders"), ["10"], "{run}");

    // Truncated: the footer is gone. Garbage: bytes overwritten from the start to the middle,
    // into the file's metadata (on a file this small). Not Parquet: a CSV named `.parquet`.
    let truncated = good[..good.len() / 2].to_vec();
    let mut garbage = good;
    let middle = garbage.len() / 2;
    for byte in &mut garbage[8..middle] {
        *byte = 0xAB;
    }
    let not_parquet = b"order_id,ordered_at\n1,2026-03-02\n".to_vec();
    for (what, bytes) in [
        ("truncated", truncated),
        ("garbage", garbage),
        ("not parquet", not_parquet),
    ] {
        let (dir, bad_file) = orders_project(&bytes);
        for args in [
            &["validate"][..],
            &["compute", "orders", "--grain", "month", "--format", "csv"][..],
        ] {
            let run = Run::of(&mut lodestar_project(&dir.project(), args));
            assert_eq!(run.code, Some(1), "{what}: expected an error\n{run}");
            assert!(
                run.stderr
                    .contains("source `app`: cannot read table `orders`"),
                "{what}: the source and table are not named\n{run}"
            );
            assert!(
                run.stderr
                    .contains(&format!("caused by: file {}", bad_file.display())),
                "{what}: the file is not named\n{run}"
            );
            assert!(run.stdout.is_empty(), "{what}: no partial result\n{run}");
        }
    }
}
