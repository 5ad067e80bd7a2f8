//! `cargo xtask sample`: a deterministic synthetic data set for a lodging marketplace whose
//! North Star is nights booked.
//!
//! Layout of the output directory (each entry becomes a table of the example project, so
//! nothing else may be written there):
//!
//! - `users.csv`: one row per signup.
//! - `events/month=YYYY-MM/events.csv`: product events, hive-partitioned by month.
//! - `bookings.ndjson`: one booking per line; each has a `book` event at the same second.
//!
//! A value moment is planted for discovery analyses: users who save at least two listings
//! in their first 24 hours are far more likely to still be active 14 days after signup
//! (65% against 25%). Nothing else a user does on the first day changes retention.
//!
//! Determinism: one seeded generator drawn in a fixed order, integers and exactly rounded
//! float operations only (no `ln`/`powf`, whose last bit may vary between platforms' libm),
//! and output order fixed by sorting on (time, generation order).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fs_err as fs;

use crate::civil::{SECS_PER_DAY, Timestamp, days_from_civil, weekday};

/// Where the data goes, relative to the workspace root.
pub const DEFAULT_DIR: &str = "examples/data";

/// Changing the seed or any draw below changes every file: the example's expected
/// outputs (tests, docs) then need updating too.
const SEED: u64 = 0x4c0d_e57a_2026;

const FIRST_DAY: (i64, u32, u32) = (2026, 3, 1);
const LAST_DAY: (i64, u32, u32) = (2026, 8, 31);

#[derive(Debug)]
pub struct Options {
    pub out: PathBuf,
    pub force: bool,
}

/// Writes the data set unless `opts.out` already holds it.
pub fn run(opts: &Options) -> Result<()> {
    let out = &opts.out;
    if !opts.force && out.exists() {
        if is_complete(out) {
            println!(
                "sample: {} already holds the sample data; skipping (--force regenerates it)",
                out.display()
            );
            return Ok(());
        }
        bail!(
            "{} exists but is not a complete sample data set; pass --force to `cargo xtask sample` to replace it",
            out.display()
        );
    }
    let data = generate();
    write_atomically(out, &data)?;
    println!(
        "sample: wrote {}: users.csv {} rows, events/ {} rows in {} files, bookings.ndjson {} rows",
        out.display(),
        data.users.len(),
        data.events.len(),
        months().len(),
        data.bookings.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Vocabulary and the knobs of the simulation.

const COUNTRIES: [&str; 5] = ["US", "FR", "DE", "GB", "BR"];
const COUNTRY_WEIGHTS: [u32; 5] = [40, 20, 15, 15, 10];
/// Typical nightly price in cents; each booking varies it between 60% and 160%.
const NIGHTLY_CENTS: [u64; 5] = [18_000, 14_000, 12_000, 16_000, 7_000];

const PLATFORMS: [&str; 3] = ["ios", "android", "web"];
const PLATFORM_WEIGHTS: [u32; 3] = [45, 35, 20];
const WEB: usize = 2;

const CHANNELS: [&str; 3] = ["organic", "paid", "referral"];
const CHANNEL_WEIGHTS: [u32; 3] = [50, 35, 15];

/// Signups per hour of the day (UTC), evenings busiest.
const HOUR_WEIGHTS: [u32; 24] = [
    2, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 6, 7, 7, 6, 6, 6, 7, 8, 9, 9, 8, 6, 3,
];
/// Signups on the first day of the period; growth takes the last day to 1.6 times this.
const SIGNUPS_PER_DAY: f64 = 32.3;
const SIGNUP_GROWTH: f64 = 0.6;

/// Listings saved in the first 24 hours: 0, 1, 2, … About 30% save two or more.
const FIRST_DAY_SAVE_WEIGHTS: [u32; 6] = [45, 25, 15, 9, 4, 2];
/// Listings saved in a later session.
const LATER_SAVE_WEIGHTS: [u32; 3] = [70, 20, 10];
/// The planted effect: chance of still being active 14+ days after signup.
const RETAINED_IF_SAVED_TWICE: f64 = 0.65;
const RETAINED_OTHERWISE: f64 = 0.25;
/// Mean number of days a retained user stays around after day 21.
const RETAINED_EXTRA_DAYS_MEAN: u32 = 90;

const MESSAGE_PROB: f64 = 0.12;
const BOOK_PROB_FIRST_DAY: f64 = 0.05;
const BOOK_PROB_LATER: f64 = 0.08;
const CANCEL_PROB: f64 = 0.10;
/// Nights of a booking: 1, 2, … 14, mostly short stays.
const NIGHT_WEIGHTS: [u32; 14] = [180, 220, 180, 120, 80, 60, 60, 30, 20, 15, 10, 8, 6, 11];

/// Sessions start at least this long before the end of their 24-hour day and never last
/// longer, so a session never spills into the next day (day 0 is exactly the first 24h).
const SESSION_ROOM: i64 = 4_000;
const MAX_GAP_SECS: i64 = 150;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AppOpen,
    Search,
    ViewListing,
    SaveListing,
    MessageHost,
    Book,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::AppOpen => "app_open",
            Kind::Search => "search",
            Kind::ViewListing => "view_listing",
            Kind::SaveListing => "save_listing",
            Kind::MessageHost => "message_host",
            Kind::Book => "book",
        }
    }
}

#[derive(Debug)]
struct User {
    id: u32,
    signed_up: i64,
    country: usize,
    platform: usize,
    channel: usize,
}

#[derive(Debug)]
struct Event {
    time: i64,
    /// Generation order: breaks ties between equal times reproducibly.
    seq: u32,
    user: u32,
    kind: Kind,
    platform: usize,
    country: usize,
}

#[derive(Debug)]
struct Booking {
    time: i64,
    seq: u32,
    user: u32,
    nights: u64,
    price_cents: u64,
    cancelled: bool,
    platform: usize,
    country: usize,
}

#[derive(Debug)]
struct Data {
    users: Vec<User>,
    /// Sorted by (time, seq).
    events: Vec<Event>,
    /// Sorted by (time, seq); booking ids are positions in this order, from 1.
    bookings: Vec<Booking>,
}

fn first_day() -> i64 {
    days_from_civil(FIRST_DAY.0, FIRST_DAY.1, FIRST_DAY.2)
}

/// The first second after the period: nothing happens at or after it.
fn end_secs() -> i64 {
    (days_from_civil(LAST_DAY.0, LAST_DAY.1, LAST_DAY.2) + 1) * SECS_PER_DAY
}

/// The `(year, month)` of every month of the period, in order.
fn months() -> Vec<(i64, u32)> {
    let mut months = vec![(FIRST_DAY.0, FIRST_DAY.1)];
    while *months.last().expect("starts non-empty") != (LAST_DAY.0, LAST_DAY.1) {
        let (y, m) = *months.last().expect("starts non-empty");
        months.push(if m == 12 { (y + 1, 1) } else { (y, m + 1) });
    }
    months
}

fn partition_dir((year, month): (i64, u32)) -> String {
    format!("month={year:04}-{month:02}")
}

/// Every file of the data set, relative to its directory.
fn expected_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("users.csv"), PathBuf::from("bookings.ndjson")];
    for month in months() {
        files.push(
            Path::new("events")
                .join(partition_dir(month))
                .join("events.csv"),
        );
    }
    files
}

fn is_complete(dir: &Path) -> bool {
    expected_files().iter().all(|f| dir.join(f).is_file())
}

// ---------------------------------------------------------------------------------------
// Generation.

struct Generator {
    rng: fastrand::Rng,
    end: i64,
    seq: u32,
    events: Vec<Event>,
    bookings: Vec<Booking>,
}

fn generate() -> Data {
    let mut g = Generator {
        rng: fastrand::Rng::with_seed(SEED),
        end: end_secs(),
        seq: 0,
        events: Vec::new(),
        bookings: Vec::new(),
    };
    let users = g.users();
    for user in &users {
        g.activity(user);
    }
    let Generator {
        mut events,
        mut bookings,
        ..
    } = g;
    events.sort_unstable_by_key(|e| (e.time, e.seq));
    bookings.sort_unstable_by_key(|b| (b.time, b.seq));
    Data {
        users,
        events,
        bookings,
    }
}

impl Generator {
    fn pick(&mut self, weights: &[u32]) -> usize {
        let mut ticket = self.rng.u32(0..weights.iter().sum::<u32>());
        for (i, &w) in weights.iter().enumerate() {
            if ticket < w {
                return i;
            }
            ticket -= w;
        }
        unreachable!("the ticket is below the sum of the weights")
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// Signups day by day, gently growing, busier at weekends; ids in signup order.
    fn users(&mut self) -> Vec<User> {
        let first = first_day();
        let days = self.end / SECS_PER_DAY - first;
        let mut users = Vec::new();
        for day in 0..days {
            let growth = 1.0 + SIGNUP_GROWTH * day as f64 / (days - 1) as f64;
            let week = match weekday(first + day) {
                4 => 1.05,
                5 | 6 => 1.2,
                _ => 0.95,
            };
            let noise = 0.85 + 0.3 * self.rng.f64();
            let count = (SIGNUPS_PER_DAY * growth * week * noise).round() as usize;
            let mut times: Vec<i64> = (0..count)
                .map(|_| {
                    let hour = self.pick(&HOUR_WEIGHTS) as i64;
                    (first + day) * SECS_PER_DAY + hour * 3600 + self.rng.i64(0..3600)
                })
                .collect();
            times.sort_unstable();
            for signed_up in times {
                users.push(User {
                    id: users.len() as u32 + 1,
                    signed_up,
                    country: self.pick(&COUNTRY_WEIGHTS),
                    platform: self.pick(&PLATFORM_WEIGHTS),
                    channel: self.pick(&CHANNEL_WEIGHTS),
                });
            }
        }
        users
    }

    /// A user's sessions, by 24-hour day since signup (day 0 is the first 24 hours).
    fn activity(&mut self, user: &User) {
        let saves = self.pick(&FIRST_DAY_SAVE_WEIGHTS) as u32;
        // The first session starts with the signup itself.
        if self.chance(0.35) {
            let first = (0..saves).filter(|_| self.rng.bool()).count() as u32;
            self.session(user, user.signed_up, first, BOOK_PROB_FIRST_DAY);
            let start = user.signed_up + self.rng.i64(3_600..SECS_PER_DAY - SESSION_ROOM);
            self.session(user, start, saves - first, BOOK_PROB_FIRST_DAY);
        } else {
            self.session(user, user.signed_up, saves, BOOK_PROB_FIRST_DAY);
        }

        // The planted effect. Retained users are active at least once in days 14..=20 and
        // drift away later; the others stop for good before day 14.
        let retained = self.chance(if saves >= 2 {
            RETAINED_IF_SAVED_TWICE
        } else {
            RETAINED_OTHERWISE
        });
        let (last_day, forced_day, mut p, decay, floor) = if retained {
            let mut extra = 0;
            while self.rng.u32(0..RETAINED_EXTRA_DAYS_MEAN) != 0 && extra < 400 {
                extra += 1;
            }
            (21 + extra, Some(14 + self.rng.i64(0..7)), 0.40, 0.9, 0.10)
        } else {
            (self.rng.i64(0..14), None, 0.45, 0.8, 0.0)
        };

        for day in 1..=last_day {
            let day_start = user.signed_up + day * SECS_PER_DAY;
            if day_start >= self.end {
                break;
            }
            let weekend = if weekday(day_start / SECS_PER_DAY) >= 5 {
                1.15
            } else {
                1.0
            };
            let active = forced_day == Some(day) || self.chance((p + floor) * weekend);
            p *= decay;
            if !active {
                continue;
            }
            // Morning and evening slots keep a day's two sessions apart and in order.
            let two = self.chance(0.2);
            let start = day_start + self.rng.i64(0..40_000);
            let saves = self.pick(&LATER_SAVE_WEIGHTS) as u32;
            self.session(user, start, saves, BOOK_PROB_LATER);
            if two {
                let start = day_start + self.rng.i64(45_000..SECS_PER_DAY - SESSION_ROOM);
                let saves = self.pick(&LATER_SAVE_WEIGHTS) as u32;
                self.session(user, start, saves, BOOK_PROB_LATER);
            }
        }
    }

    /// One visit: open, a few searches with listing views, saves, maybe a message and a
    /// booking. Events past the end of the period are not observed, so they are dropped.
    fn session(&mut self, user: &User, start: i64, saves: u32, book_prob: f64) {
        // Most visits use the signup platform; some switch between app and website.
        let platform = if self.chance(0.85) {
            user.platform
        } else if user.platform == WEB {
            self.rng.usize(0..WEB)
        } else {
            WEB
        };
        let mut actions = vec![Kind::AppOpen];
        for _ in 0..self.rng.usize(1..=3) {
            actions.push(Kind::Search);
            for _ in 0..self.rng.usize(0..=3) {
                actions.push(Kind::ViewListing);
            }
        }
        for _ in 0..saves {
            let at = self.rng.usize(2..=actions.len());
            actions.insert(at, Kind::SaveListing);
        }
        if self.chance(MESSAGE_PROB) {
            actions.push(Kind::MessageHost);
        }
        if self.chance(book_prob) {
            actions.push(Kind::Book);
        }
        debug_assert!(actions.len() as i64 * MAX_GAP_SECS < SESSION_ROOM);

        let mut time = start;
        for (i, kind) in actions.into_iter().enumerate() {
            if i > 0 {
                time += self.rng.i64(5..=MAX_GAP_SECS);
            }
            if time >= self.end {
                return;
            }
            let seq = self.next_seq();
            self.events.push(Event {
                time,
                seq,
                user: user.id,
                kind,
                platform,
                country: user.country,
            });
            if kind == Kind::Book {
                let nights = self.pick(&NIGHT_WEIGHTS) as u64 + 1;
                let nightly = NIGHTLY_CENTS[user.country] * self.rng.u64(6_000..=16_000) / 10_000;
                let cancelled = self.chance(CANCEL_PROB);
                self.bookings.push(Booking {
                    time,
                    seq,
                    user: user.id,
                    nights,
                    price_cents: nightly * nights,
                    cancelled,
                    platform,
                    country: user.country,
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Output.

/// Builds the data set in a sibling directory and renames it into place, so readers see
/// either no data set or a complete one, never a half-written one.
fn write_atomically(out: &Path, data: &Data) -> Result<()> {
    let name = out
        .file_name()
        .with_context(|| format!("{} does not name a directory", out.display()))?
        .to_string_lossy();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent)?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir(&tmp)?;
    if let Err(err) = write_all(&tmp, data) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(err);
    }

    if out.exists() {
        // A directory cannot be renamed over a non-empty one: move the old one aside first.
        let old = parent.join(format!(".{name}.old-{pid}"));
        fs::rename(out, &old)?;
        if let Err(err) = fs::rename(&tmp, out) {
            let _ = fs::rename(&old, out);
            let _ = fs::remove_dir_all(&tmp);
            return Err(err.into());
        }
        fs::remove_dir_all(&old)?;
    } else {
        fs::rename(&tmp, out)?;
    }
    Ok(())
}

fn write_all(dir: &Path, data: &Data) -> Result<()> {
    write_file(&dir.join("users.csv"), |w| {
        writeln!(w, "user_id,signed_up_at,country,platform,channel")?;
        for u in &data.users {
            writeln!(
                w,
                "{},{},{},{},{}",
                u.id,
                Timestamp(u.signed_up),
                COUNTRIES[u.country],
                PLATFORMS[u.platform],
                CHANNELS[u.channel]
            )?;
        }
        Ok(())
    })?;

    let mut rest = data.events.as_slice();
    for month in months() {
        let split = rest.partition_point(|e| Timestamp(e.time).year_month() == month);
        let (in_month, later) = rest.split_at(split);
        rest = later;
        let part = dir.join("events").join(partition_dir(month));
        fs::create_dir_all(&part)?;
        write_file(&part.join("events.csv"), |w| {
            writeln!(w, "event_time,user_id,event_type,platform,country")?;
            for e in in_month {
                writeln!(
                    w,
                    "{},{},{},{},{}",
                    Timestamp(e.time),
                    e.user,
                    e.kind.as_str(),
                    PLATFORMS[e.platform],
                    COUNTRIES[e.country]
                )?;
            }
            Ok(())
        })?;
    }
    if !rest.is_empty() {
        bail!("{} events fall outside the period", rest.len());
    }

    write_file(&dir.join("bookings.ndjson"), |w| {
        for (i, b) in data.bookings.iter().enumerate() {
            // Written by hand: the values need no escaping, and prices keep two decimals.
            writeln!(
                w,
                r#"{{"booking_id":{},"user_id":{},"booked_at":"{}","nights":{},"price":{}.{:02},"status":"{}","country":"{}","platform":"{}"}}"#,
                i + 1,
                b.user,
                Timestamp(b.time),
                b.nights,
                b.price_cents / 100,
                b.price_cents % 100,
                if b.cancelled {
                    "cancelled"
                } else {
                    "confirmed"
                },
                COUNTRIES[b.country],
                PLATFORMS[b.platform]
            )?;
        }
        Ok(())
    })
}

fn write_file(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    let mut w = BufWriter::new(fs::File::create(path)?);
    body(&mut w)
        .and_then(|()| w.flush())
        .with_context(|| format!("failed to write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_files_cover_six_months() {
        let files = expected_files();
        assert_eq!(files.len(), 8);
        assert!(files.contains(&PathBuf::from("events/month=2026-08/events.csv")));
    }

    #[test]
    fn generation_is_reproducible_and_within_the_period() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.events.len(), b.events.len());
        assert_eq!(a.bookings.len(), b.bookings.len());
        let start = first_day() * SECS_PER_DAY;
        let signup: Vec<i64> = a.users.iter().map(|u| u.signed_up).collect();
        for e in &a.events {
            assert!(e.time >= signup[e.user as usize - 1] && e.time >= start);
            assert!(e.time < end_secs());
        }
    }
}
