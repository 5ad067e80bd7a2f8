//! The `lake` benchmark's data set: a year of a product's users, events and orders as a data
//! lake holds them, Parquet files in hive `dt=YYYY-MM-DD` folders. Deterministic: the same
//! event count gives the same files on every run and machine (a seeded SplitMix64 per day,
//! so one more day can be written alone, as a lake's next load would).
//!
//! ```text
//! DIR/lake/users/users.parquet                    user_id, signed_up_at, country, platform
//! DIR/lake/events/dt=2025-01-01/part-0.parquet    user_id, event_time, event_type, platform,
//!                                                 country, properties (JSON text)
//! DIR/lake/orders/dt=2025-01-01/part-0.parquet    order_id, user_id, ordered_at, amount, status
//! DIR/_manifest.json                              what was written, checked before reuse
//! ```
//!
//! Every purchase event has its order (same user, same second); 1 order in 10 is refunded.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::{Days, NaiveDate};
use lodestar_core::datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use lodestar_core::datafusion::parquet::arrow::ArrowWriter;
use lodestar_core::datafusion::parquet::basic::Compression;
use lodestar_core::datafusion::parquet::file::properties::WriterProperties;
use serde_json::json;

/// Bumped whenever the generator's output changes, so old data sets are rewritten.
const VERSION: u64 = 2;
const SEED: u64 = 0x10de_57a2;
/// The data covers 2025, one `dt=` folder a day.
pub const DAYS: u64 = 365;
pub fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 1, 1).expect("a valid date")
}

const EVENT_TYPES: [(&str, u64); 4] = [
    ("page_view", 60),
    ("search", 20),
    ("add_to_cart", 12),
    ("purchase", 8),
];
const PLATFORMS: [&str; 3] = ["web", "ios", "android"];
const COUNTRIES: [&str; 6] = ["US", "DE", "FR", "GB", "BR", "IN"];
const PAGES: [&str; 5] = ["/", "/search", "/product", "/cart", "/account"];

/// The size of a data set.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub events: u64,
}

impl Shape {
    pub fn users(self) -> u64 {
        (self.events / 20).max(100)
    }

    /// Events on day `day` (0-based; day `DAYS` is the day after the year, for refreshes).
    pub fn events_on(self, day: u64) -> u64 {
        let base = self.events / DAYS;
        if day < DAYS {
            base + u64::from(day < self.events % DAYS)
        } else {
            base
        }
    }

    /// Users signed up by the end of `day`: user `k` signs up on day `k * DAYS / users`.
    pub(crate) fn users_by(self, day: u64) -> u64 {
        ((day + 1) * self.users()).div_ceil(DAYS).min(self.users())
    }
}

/// SplitMix64: tiny, fast, and fixed forever (a crate's generator may change between
/// versions, and the data set must not).
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(stream: u64) -> Rng {
        Rng(SEED ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// The index of one of `choices`, drawn by their weights, which add up to 100.
    pub(crate) fn weighted(&mut self, choices: &[(&str, u64)]) -> usize {
        let mut roll = self.below(100);
        choices
            .iter()
            .position(|(_, weight)| {
                let hit = roll < *weight;
                roll = roll.saturating_sub(*weight);
                hit
            })
            .expect("weights add up to 100")
    }
}

/// Writes the data set into `dir` unless its manifest says it is already there; returns
/// whether it wrote anything.
pub fn ensure(dir: &Path, shape: Shape) -> anyhow::Result<bool> {
    ensure_written(dir, &manifest(shape, "lake"), "lake", |root| {
        write_users(root, shape)?;
        (0..DAYS).try_for_each(|day| write_day(root, shape, day))
    })
}

/// Writes a data set into `dir/root` with `write` unless `dir`'s manifest is `wanted` (and the
/// users file is there); returns whether it wrote anything.
pub(crate) fn ensure_written(
    dir: &Path,
    wanted: &serde_json::Value,
    root: &str,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<bool> {
    let manifest_path = dir.join("_manifest.json");
    if let Ok(text) = fs_err::read_to_string(&manifest_path)
        && serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .as_ref()
            == Some(wanted)
        && dir.join(root).join("users/users.parquet").is_file()
    {
        return Ok(false);
    }
    if dir.exists() {
        fs_err::remove_dir_all(dir)?;
    }
    eprintln!(
        "lake: writing {} events, {} users over {DAYS} days to {}",
        wanted["events"],
        wanted["users"],
        dir.display()
    );
    write(&dir.join(root))?;
    // Written last: a data set cut short by a crash has none, and is written again.
    fs_err::write(&manifest_path, serde_json::to_string_pretty(wanted)?)?;
    Ok(true)
}

/// What a data set of `shape` written by the generator `name` holds.
pub(crate) fn manifest(shape: Shape, name: &str) -> serde_json::Value {
    let mut manifest = json!({
        "generator_version": VERSION,
        "seed": SEED,
        "events": shape.events,
        "users": shape.users(),
        "first_day": first_day().to_string(),
        "days": DAYS,
    });
    // The lake's manifests predate the other generators and keep their form.
    if name != "lake" {
        manifest["generator"] = json!(name);
    }
    manifest
}

fn properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(256 * 1024))
        .build()
}

/// Writes `columns` (name, values; none null) as one Parquet file at `path`.
pub(crate) fn write_table(path: &Path, columns: Vec<(&str, ArrayRef)>) -> anyhow::Result<()> {
    let batch = RecordBatch::try_from_iter_with_nullable(
        columns
            .into_iter()
            .map(|(name, values)| (name, values, false)),
    )?;
    if let Some(parent) = path.parent() {
        fs_err::create_dir_all(parent)?;
    }
    let file = fs_err::File::create(path)?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(properties()))
        .with_context(|| format!("writing {}", path.display()))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(())
}

pub(crate) fn micros(day: u64, second: u64) -> i64 {
    let date = first_day() + Days::new(day);
    let midnight = date
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp();
    (midnight + second as i64) * 1_000_000
}

pub(crate) fn write_users(lake: &Path, shape: Shape) -> anyhow::Result<()> {
    let mut rng = Rng::new(u64::MAX);
    let n = shape.users();
    let (mut ids, mut times, mut countries, mut platforms) = (vec![], vec![], vec![], vec![]);
    for k in 0..n {
        ids.push(k as i64);
        times.push(micros(k * DAYS / n, rng.below(86_400)));
        countries.push(COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize]);
        platforms.push(PLATFORMS[rng.below(PLATFORMS.len() as u64) as usize]);
    }
    write_table(
        &lake.join("users/users.parquet"),
        vec![
            ("user_id", Arc::new(Int64Array::from(ids))),
            (
                "signed_up_at",
                Arc::new(TimestampMicrosecondArray::from(times)),
            ),
            ("country", Arc::new(StringArray::from(countries))),
            ("platform", Arc::new(StringArray::from(platforms))),
        ],
    )
}

/// The user of one of day `day`'s events, among the `eligible` users signed up by then. 30%
/// of the events come from new users (signed up a geometric number of days ago, 3 on
/// average), the rest from anyone signed up: new users are the most active and then fade,
/// which gives retention something to measure.
pub(crate) fn pick_user(rng: &mut Rng, shape: Shape, day: u64, eligible: u64) -> u64 {
    let mut user = rng.below(eligible);
    if rng.below(10) < 3 {
        let mut age = 0;
        while rng.below(4) != 0 {
            age += 1;
        }
        if let Some(signed_up) = day.min(DAYS - 1).checked_sub(age) {
            let first = signed_up.checked_sub(1).map_or(0, |d| shape.users_by(d));
            let last = shape.users_by(signed_up);
            if last > first {
                user = first + rng.below(last - first);
            }
        }
    }
    user
}

/// Writes day `day`'s events and orders (day `DAYS` is the day after the year).
pub fn write_day(lake: &Path, shape: Shape, day: u64) -> anyhow::Result<()> {
    if day > DAYS {
        bail!("day {day} is past the data set's extra day {DAYS}");
    }
    let mut rng = Rng::new(day);
    let eligible = shape.users_by(day.min(DAYS - 1));
    let mut events: Vec<(u64, u64, usize)> = (0..shape.events_on(day))
        .map(|_| {
            let user = pick_user(&mut rng, shape, day, eligible);
            let kind = rng.weighted(&EVENT_TYPES);
            (rng.below(86_400), user, kind)
        })
        .collect();
    events.sort_unstable();
    let date = first_day() + Days::new(day);
    let n = events.len();
    let (mut users, mut times, mut kinds, mut platforms, mut countries, mut props) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut orders: Vec<(i64, i64, i64, f64, &str)> = Vec::new();
    for (i, (second, user, kind)) in events.iter().enumerate() {
        users.push(*user as i64);
        times.push(micros(day, *second));
        kinds.push(EVENT_TYPES[*kind].0);
        platforms.push(PLATFORMS[(user % 3) as usize]);
        countries.push(COUNTRIES[(user % 6) as usize]);
        props.push(format!(
            r#"{{"page":"{}","duration_ms":{}}}"#,
            PAGES[rng.below(PAGES.len() as u64) as usize],
            rng.below(30_000)
        ));
        if EVENT_TYPES[*kind].0 == "purchase" {
            // Cents, so sums are exact in both engines up to float rounding.
            let amount = (500 + rng.below(20_000)) as f64 / 100.0;
            let status = if rng.below(10) == 0 {
                "refunded"
            } else {
                "completed"
            };
            let order_id = ((day << 32) | i as u64) as i64;
            orders.push((order_id, *user as i64, micros(day, *second), amount, status));
        }
    }
    write_table(
        &lake.join(format!("events/dt={date}/part-0.parquet")),
        vec![
            ("user_id", Arc::new(Int64Array::from(users))),
            (
                "event_time",
                Arc::new(TimestampMicrosecondArray::from(times)),
            ),
            ("event_type", Arc::new(StringArray::from(kinds))),
            ("platform", Arc::new(StringArray::from(platforms))),
            ("country", Arc::new(StringArray::from(countries))),
            ("properties", Arc::new(StringArray::from(props))),
        ],
    )?;
    write_table(
        &lake.join(format!("orders/dt={date}/part-0.parquet")),
        vec![
            (
                "order_id",
                Arc::new(Int64Array::from_iter_values(orders.iter().map(|o| o.0))),
            ),
            (
                "user_id",
                Arc::new(Int64Array::from_iter_values(orders.iter().map(|o| o.1))),
            ),
            (
                "ordered_at",
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    orders.iter().map(|o| o.2),
                )),
            ),
            (
                "amount",
                Arc::new(Float64Array::from_iter_values(orders.iter().map(|o| o.3))),
            ),
            (
                "status",
                Arc::new(StringArray::from_iter_values(orders.iter().map(|o| o.4))),
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_add_up_to_the_events() {
        for events in [1_000, 1_000_000, 10_000_123] {
            let shape = Shape { events };
            assert_eq!((0..DAYS).map(|d| shape.events_on(d)).sum::<u64>(), events);
            assert_eq!(shape.users_by(DAYS - 1), shape.users());
        }
    }
}
