//! The `shapes` tree's data set (`lodestar-bench lake --tree shapes`): a year of a
//! marketplace's users, browsing events and bookings, in the same hive `dt=YYYY-MM-DD` layout
//! and with the same users and day sizes as the lake (`lake_data.rs`), but with the columns
//! the other shapes of metric need: several distinct keys (a session, a text device id), a
//! listing with 10,000 values to break metrics down by, and the host that owns it.
//!
//! ```text
//! DIR/shop/users/users.parquet                  user_id, signed_up_at, country, platform
//! DIR/shop/events/dt=2025-01-01/part-0.parquet  user_id, session_id, listing_id, device_id
//!                                               (text), event_time, event_type
//! DIR/shop/bookings/dt=2025-01-01/part-0.parquet
//!                                               booking_id, user_id, listing_id, host_id,
//!                                               booked_at, nights, status
//! ```
//!
//! Every `book` event has its booking (same user, listing and second); 1 in 12 is cancelled.

use std::path::Path;
use std::sync::Arc;

use chrono::Days;
use lodestar_core::datafusion::arrow::array::{
    ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray,
};

use crate::lake_data::{
    self, DAYS, Rng, Shape, ensure_written, micros, pick_user, write_table, write_users,
};

/// Listings: the `--by listing_id` breakdown has this many values.
pub const LISTINGS: u64 = 10_000;
/// Half the events go to the first this many listings, as a marketplace's popular ones.
const POPULAR: u64 = 500;
/// A listing's host: four listings a host.
const LISTINGS_PER_HOST: u64 = 4;
const EVENT_TYPES: [(&str, u64); 4] = [("view", 70), ("search", 20), ("message", 6), ("book", 4)];
/// A stream apart from the lake's day streams (0..=DAYS) and users (u64::MAX).
const STREAM: u64 = 1 << 32;

/// Writes the data set into `dir` unless its manifest says it is already there.
pub fn ensure(dir: &Path, shape: Shape) -> anyhow::Result<bool> {
    ensure_written(dir, &lake_data::manifest(shape, "shapes"), "shop", |root| {
        write_users(root, shape)?;
        (0..DAYS).try_for_each(|day| write_day(root, shape, day))
    })
}

/// A `book` event's booking.
#[derive(Debug)]
struct Booking {
    id: i64,
    user: i64,
    listing: i64,
    time: i64,
    nights: i64,
    status: &'static str,
}

fn write_day(root: &Path, shape: Shape, day: u64) -> anyhow::Result<()> {
    let mut rng = Rng::new(STREAM + day);
    let eligible = shape.users_by(day);
    let mut events: Vec<(u64, u64, usize, u64)> = (0..shape.events_on(day))
        .map(|_| {
            let user = pick_user(&mut rng, shape, day, eligible);
            let kind = rng.weighted(&EVENT_TYPES);
            let listing = if rng.below(2) == 0 {
                rng.below(POPULAR)
            } else {
                rng.below(LISTINGS)
            };
            (rng.below(86_400), user, kind, listing)
        })
        .collect();
    events.sort_unstable();
    let n = events.len();
    let mut users = Vec::with_capacity(n);
    let mut sessions = Vec::with_capacity(n);
    let mut listings = Vec::with_capacity(n);
    let mut devices = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut bookings: Vec<Booking> = Vec::new();
    for (i, (second, user, kind, listing)) in events.iter().enumerate() {
        // Up to three sessions a user a day, numbered by the day, then the user.
        let session = ((day * 3 + second / 28_800) << 36) | user;
        let time = micros(day, *second);
        users.push(*user as i64);
        sessions.push(session as i64);
        listings.push(*listing as i64);
        // A user has a phone and a computer.
        devices.push(format!(
            "{:x}-{}",
            user.wrapping_mul(0x9e37_79b9),
            rng.below(2)
        ));
        times.push(time);
        kinds.push(EVENT_TYPES[*kind].0);
        if EVENT_TYPES[*kind].0 == "book" {
            let nights = 1 + rng.below(10) as i64;
            let status = if rng.below(12) == 0 {
                "cancelled"
            } else {
                "confirmed"
            };
            let booking_id = ((day << 32) | i as u64) as i64;
            bookings.push(Booking {
                id: booking_id,
                user: *user as i64,
                listing: *listing as i64,
                time,
                nights,
                status,
            });
        }
    }
    let date = lake_data::first_day() + Days::new(day);
    write_table(
        &root.join(format!("events/dt={date}/part-0.parquet")),
        vec![
            ("user_id", Arc::new(Int64Array::from(users))),
            ("session_id", Arc::new(Int64Array::from(sessions))),
            ("listing_id", Arc::new(Int64Array::from(listings))),
            ("device_id", Arc::new(StringArray::from(devices))),
            (
                "event_time",
                Arc::new(TimestampMicrosecondArray::from(times)),
            ),
            ("event_type", Arc::new(StringArray::from(kinds))),
        ],
    )?;
    let column = |f: fn(&Booking) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(bookings.iter().map(f)))
    };
    write_table(
        &root.join(format!("bookings/dt={date}/part-0.parquet")),
        vec![
            ("booking_id", column(|b| b.id)),
            ("user_id", column(|b| b.user)),
            ("listing_id", column(|b| b.listing)),
            ("host_id", column(|b| b.listing / LISTINGS_PER_HOST as i64)),
            (
                "booked_at",
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    bookings.iter().map(|b| b.time),
                )),
            ),
            ("nights", column(|b| b.nights)),
            (
                "status",
                Arc::new(StringArray::from_iter_values(
                    bookings.iter().map(|b| b.status),
                )),
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_data_set_has_every_table_and_its_listings() {
        let dir = tempfile::tempdir().unwrap();
        let shape = Shape { events: 20_000 };
        assert!(ensure(dir.path(), shape).unwrap());
        assert!(
            !ensure(dir.path(), shape).unwrap(),
            "the second call reuses it"
        );
        let shop = dir.path().join("shop");
        assert!(shop.join("users/users.parquet").is_file());
        assert!(shop.join("events/dt=2025-12-31/part-0.parquet").is_file());
        assert!(shop.join("bookings/dt=2025-06-01/part-0.parquet").is_file());
    }
}
