//! The Export API client and its per-hour cache.
//!
//! `GET <base>/api/2/export?start=YYYYMMDDTHH&end=YYYYMMDDTHH` (UTC hours, both included,
//! selecting events by `server_upload_time`) with basic auth answers a zip archive of the
//! hourly files. Fetched entries are written under the cache directory in the same layout
//! (`<project_id>/<project_id>_<date>_<H>#<n>.json.gz`), and each hour fetched gets a marker
//! `_fetched/YYYYMMDDTHH`, so a later scan only asks for the hours it has not got. The hours of
//! the last few hours are fetched again each time: Amplitude is still adding to them.
//!
//! Answers: 404 means no data in the range (an empty result); 400 (an export over 4 GB) and
//! 504 (a timeout) are asked again as two halves of the range; 429, 500, 502, 503 and a 504 for
//! a single hour are retried after a wait (the server's `Retry-After` or an exponential backoff
//! with jitter, either capped by `max_retry_wait_ms`), at most `max_retries` times; 401/403 are
//! refused credentials. Ranges over 365 days are split before asking.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use lodestar_connector_api::kit::error::chain;
use reqwest::StatusCode;

use crate::layout::{self, Hour};
use crate::options::Api;
use crate::source::HourRange;

/// Hours this close to now are not marked fetched: Amplitude still adds to them.
const UNSETTLED_HOURS: i64 = 3;
/// The longest range one request may ask for.
const MAX_RANGE_HOURS: i64 = 365 * 24;

/// The client of one source.
#[derive(Debug)]
pub struct ExportApi {
    settings: Api,
    client: reqwest::Client,
}

/// How one request went.
enum Answer {
    Zip(bytes::Bytes),
    NoData,
    /// 400 (too large) or 504 (timed out): ask for less.
    TooMuch(StatusCode),
}

impl ExportApi {
    pub fn new(settings: Api) -> Result<ExportApi, String> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(ExportApi { settings, client })
    }

    /// The hours a scan of `range` reads: no later than now, and from `api.start` when the
    /// query has no time range.
    pub fn clamp(&self, range: HourRange) -> Result<HourRange, String> {
        let now = layout::of_micros(Utc::now().timestamp_micros());
        let (lo, hi) = match (range, self.settings.start) {
            (Some((lo, hi)), _) => (lo, hi),
            (None, Some(start)) => (layout::of_date(start), now),
            (None, None) => {
                return Err(
                    "a query of the Export API without a time range on `event_time` would download the whole history\nhint: set `api.start: YYYY-MM-DD` (the first day to read), or query with a time range (`lodestar compute --from`)"
                        .into(),
                );
            }
        };
        Ok(Some((lo, hi.min(now))))
    }

    /// Fetches the hours of `range` not in the cache yet; returns the cache directory.
    pub async fn fetch(&self, range: HourRange) -> Result<PathBuf, String> {
        let cache = self.settings.cache_dir.clone();
        let Some((lo, hi)) = self.clamp(range)? else {
            return Ok(cache);
        };
        let marks = cache.join("_fetched");
        std::fs::create_dir_all(&marks)
            .map_err(|e| format!("cannot create the cache `{}`: {e}", marks.display()))?;
        let settled = layout::of_micros(Utc::now().timestamp_micros()) - UNSETTLED_HOURS;
        // The runs of hours missing, each at most MAX_RANGE_HOURS long.
        let mut runs: Vec<(Hour, Hour)> = Vec::new();
        for hour in lo..=hi {
            if marks.join(layout::api_param(hour)).exists() {
                continue;
            }
            match runs.last_mut() {
                Some((start, end)) if *end + 1 == hour && hour - *start < MAX_RANGE_HOURS => {
                    *end = hour;
                }
                _ => runs.push((hour, hour)),
            }
        }
        let mut stack: Vec<(Hour, Hour)> = runs.into_iter().rev().collect();
        while let Some((start, end)) = stack.pop() {
            match self.export(start, end).await? {
                Answer::Zip(bytes) => {
                    let cache = cache.clone();
                    tokio::task::spawn_blocking(move || unpack(&bytes, &cache))
                        .await
                        .map_err(|e| format!("unpacking an export failed: {e}"))??;
                }
                Answer::NoData => {}
                Answer::TooMuch(_) if end > start => {
                    let mid = start + (end - start) / 2;
                    stack.push((mid + 1, end));
                    stack.push((start, mid));
                    continue;
                }
                Answer::TooMuch(status) => {
                    return Err(format!(
                        "the Export API answered {status} for the single hour {} ({}); it cannot be split further\nhint: {}",
                        layout::display(start),
                        if status == StatusCode::BAD_REQUEST {
                            "over 4 GB"
                        } else {
                            "timed out"
                        },
                        "read this hour from Amplitude's S3 export instead (option `s3`)"
                    ));
                }
            }
            for hour in start..=end.min(settled) {
                let mark = marks.join(layout::api_param(hour));
                std::fs::write(&mark, b"")
                    .map_err(|e| format!("cannot write `{}`: {e}", mark.display()))?;
            }
        }
        Ok(cache)
    }

    /// One export request, retried (see [`Retries`]) on 429, on 500/502/503, on 504 for a
    /// single hour (a longer range is split instead) and on failures to connect.
    async fn export(&self, start: Hour, end: Hour) -> Result<Answer, String> {
        let url = format!("{}/api/2/export", self.settings.base_url);
        let range = format!("{} to {}", layout::api_param(start), layout::api_param(end));
        let mut retries = Retries::new(&self.settings);
        loop {
            let sent = self
                .client
                .get(&url)
                .query(&[
                    ("start", layout::api_param(start)),
                    ("end", layout::api_param(end)),
                ])
                .basic_auth(
                    &self.settings.api_key,
                    Some(self.settings.secret_key.expose()),
                )
                .send()
                .await;
            let (failure, retry_after) = match sent {
                Ok(response) => match response.status() {
                    StatusCode::OK => {
                        let bytes = response.bytes().await.map_err(|e| {
                            format!("reading the export of {range} from {url} failed: {e}")
                        })?;
                        return Ok(Answer::Zip(bytes));
                    }
                    StatusCode::NOT_FOUND => return Ok(Answer::NoData),
                    s @ StatusCode::BAD_REQUEST => return Ok(Answer::TooMuch(s)),
                    s @ StatusCode::GATEWAY_TIMEOUT if end > start => {
                        return Ok(Answer::TooMuch(s));
                    }
                    s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                        return Err(format!(
                            "the Export API at {url} refused the credentials ({s})\nhint: check `api.api_key` and `api.secret_key` (the project's API key and secret key), and `api.residency` (us or eu)"
                        ));
                    }
                    s @ (StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::INTERNAL_SERVER_ERROR
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT) => {
                        let retry_after = response
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_retry_after);
                        let body = body_start(response).await;
                        (format!("answered {s}{body}"), retry_after)
                    }
                    s => {
                        let body = body_start(response).await;
                        return Err(format!(
                            "the Export API at {url} answered {s} for {range}{body}"
                        ));
                    }
                },
                Err(e) if e.is_connect() => (format!("could not connect: {}", chain(&e)), None),
                Err(e) => {
                    return Err(format!(
                        "the export of {range} from {url} failed: {}",
                        chain(&e)
                    ));
                }
            };
            let Some(wait) = retries.next_wait(retry_after) else {
                return Err(format!(
                    "the Export API at {url} failed for the hours {range} after {} attempts; the last one {failure}\nhint: Amplitude may be down or rate limiting: wait and run again, or raise `api.max_retries` (now {})",
                    retries.attempts(),
                    self.settings.max_retries
                ));
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The waits between the attempts of one request: exponential from `api.backoff_ms`, with
/// jitter (a random half of each wait), and every wait, a server's `Retry-After` included, at
/// most `api.max_retry_wait_ms`: a server asking for an hour must not hold a query for an
/// hour. At most `api.max_retries` retries.
#[derive(Debug)]
struct Retries {
    retries: u32,
    max_retries: u32,
    backoff: Duration,
    cap: Duration,
}

impl Retries {
    fn new(settings: &Api) -> Retries {
        Retries {
            retries: 0,
            max_retries: settings.max_retries,
            backoff: settings.backoff,
            cap: settings.max_retry_wait,
        }
    }

    /// Requests sent so far.
    fn attempts(&self) -> u32 {
        self.retries + 1
    }

    /// The wait before the next attempt, or `None` when none is left.
    fn next_wait(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.retries >= self.max_retries {
            return None;
        }
        let exponential = self
            .backoff
            .saturating_mul(2u32.saturating_pow(self.retries.min(31)))
            .min(self.cap);
        self.retries += 1;
        let wait = match retry_after {
            Some(asked) => asked,
            // Equal jitter: half the wait, plus a random part of the other half, so that many
            // clients turned away together do not come back together.
            None => exponential / 2 + exponential.mul_f64(fastrand::f64() / 2.0),
        };
        Some(wait.min(self.cap))
    }
}

/// A `Retry-After` value: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let seconds = (at.with_timezone(&Utc) - Utc::now()).num_seconds().max(0);
    Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

/// `: <the start of the body>`, or nothing for an empty body.
async fn body_start(response: reqwest::Response) -> String {
    let body = response.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(300).collect();
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// Writes the hourly entries of an export archive into the cache, each file written whole
/// (to a temporary name, then renamed), so an interrupted run leaves no half file.
fn unpack(zip_bytes: &[u8], cache: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes))
        .map_err(|e| format!("the Export API's answer is not a zip archive: {e}"))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| format!("cannot read entry {i} of the export archive: {e}"))?;
        let entry_name = entry
            .name()
            .map_err(|e| format!("cannot read entry {i} of the export archive: {e}"))?
            .to_string();
        let Some(file) = layout::parse_name(&entry_name) else {
            continue;
        };
        let base = entry_name
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let mut gz = Vec::new();
        entry
            .read_to_end(&mut gz)
            .map_err(|e| format!("cannot read `{entry_name}` of the export archive: {e}"))?;
        let dir = cache.join(&file.project);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
        let path = dir.join(&base);
        let partial = dir.join(format!(".{base}.partial"));
        std::fs::write(&partial, &gz)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries(max_retries: u32, backoff_ms: u64, cap_ms: u64) -> Retries {
        Retries {
            retries: 0,
            max_retries,
            backoff: Duration::from_millis(backoff_ms),
            cap: Duration::from_millis(cap_ms),
        }
    }

    #[test]
    fn waits_grow_with_jitter_up_to_the_cap_and_stop_after_the_retries() {
        let mut r = retries(6, 100, 1_000);
        // Without Retry-After: between half and all of 100, 200, 400, 800, 1000, 1000 ms.
        for full in [100, 200, 400, 800, 1_000, 1_000] {
            let wait = r.next_wait(None).unwrap();
            let full = Duration::from_millis(full);
            assert!(full / 2 <= wait && wait <= full, "{wait:?} for {full:?}");
        }
        assert_eq!(r.next_wait(None), None);
        assert_eq!(r.attempts(), 7);
    }

    #[test]
    fn retry_after_is_obeyed_up_to_the_cap() {
        let mut r = retries(3, 100, 5_000);
        assert_eq!(
            r.next_wait(Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            r.next_wait(Some(Duration::from_secs(86_400))),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
