//! The result cache: answers to `GET` API requests, keyed by the normalized request and the
//! data's version, with `ETag` and `Cache-Control` (and `304 Not Modified` for a matching
//! `If-None-Match`).
//!
//! The data's version changes when a scheduled check (every `refresh` interval) sees the
//! data change: for `files` sources, any file's size or modification time under the source's
//! path; other sources cannot be checked cheaply, so a project with one counts as changed at
//! every check. A new version makes every cached answer stale; they are recomputed on demand.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lodestar_core::model::Project;
use sha2::{Digest, Sha256};

/// Answers kept at most; the oldest goes first.
const CAPACITY: usize = 512;
/// Answers larger than this are not kept.
const MAX_BODY: usize = 32 << 20;

#[derive(Debug)]
pub struct Cache {
    entries: Mutex<Entries>,
    version: AtomicU64,
    max_age: Duration,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    order: VecDeque<Key>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    path: String,
    /// The parameters sorted by name; repeated ones keep their order (it matters for `by`).
    params: Vec<(String, String)>,
    arrow: bool,
    version: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    etag: HeaderValue,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Cache {
    pub fn new(max_age: Duration) -> Cache {
        Cache {
            entries: Mutex::default(),
            version: AtomicU64::new(0),
            max_age,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Makes every cached answer stale.
    pub fn invalidate(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.map.clear();
        entries.order.clear();
    }

    fn get(&self, key: &Key) -> Option<Entry> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.map.get(key).cloned()
    }

    fn put(&self, key: Key, entry: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.map.insert(key.clone(), entry).is_none() {
            entries.order.push_back(key);
        }
        while entries.order.len() > CAPACITY {
            if let Some(old) = entries.order.pop_front() {
                entries.map.remove(&old);
            }
        }
    }

    fn respond(&self, entry: Entry, if_none_match: Option<&HeaderValue>) -> Response {
        let not_modified = if_none_match
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim() == "*" || t.trim().as_bytes() == entry.etag.as_bytes())
            });
        let mut response = if not_modified {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut response = Response::new(Body::from(entry.body));
            if let Some(content_type) = entry.content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, entry.etag);
        // `private`: answers depend on the caller being allowed to see them.
        if let Ok(value) =
            HeaderValue::from_str(&format!("private, max-age={}", self.max_age.as_secs()))
        {
            headers.insert(header::CACHE_CONTROL, value);
        }
        response
    }
}

/// Serves `GET`s from the cache, and keeps successful answers.
pub async fn cached(State(cache): State<Arc<Cache>>, request: Request, next: Next) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let mut params: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let key = Key {
        path: request.uri().path().to_string(),
        params,
        arrow: crate::encode::Format::of(request.headers()) == crate::encode::Format::Arrow,
        version: cache.version.load(Ordering::SeqCst),
    };
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    if let Some(entry) = cache.get(&key) {
        cache.hits.fetch_add(1, Ordering::Relaxed);
        return cache.respond(entry, if_none_match.as_ref());
    }
    cache.misses.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!("an answer could not be cached: {e}");
            return crate::error::ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding_failed",
                "the answer is too large",
            )
            .into_response();
        }
    };
    let digest = Sha256::digest(&body);
    let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16])))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let entry = Entry {
        etag,
        content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
        body,
    };
    cache.put(key, entry.clone());
    cache.respond(entry, if_none_match.as_ref())
}

/// A fingerprint of the project's data, as far as it can be read cheaply: sizes and times of
/// the files of `files` sources; `None` when a source of another connector makes it unknowable.
pub fn fingerprint(project: &Project) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    for source in project.sources.values() {
        if source.connector != "files" {
            return None;
        }
        let path = source
            .options
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or_default();
        // A glob's directory: the part before the first wildcard.
        let fixed = path.split(['*', '?', '[']).next().unwrap_or_default();
        let dir = project.root.join(fixed);
        let dir = if dir.exists() {
            dir
        } else {
            dir.parent().map(Path::to_path_buf).unwrap_or(dir)
        };
        walk(&dir, &mut hasher);
    }
    Some(hasher.finish())
}

fn walk(path: &Path, hasher: &mut DefaultHasher) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(dir) = std::fs::read_dir(path) else {
            return;
        };
        let mut children: Vec<_> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
        children.sort();
        for child in children {
            walk(&child, hasher);
        }
    } else {
        path.hash(hasher);
        meta.len().hash(hasher);
        if let Ok(modified) = meta.modified() {
            modified.hash(hasher);
        }
    }
}

/// Checks the data every `interval` and invalidates the cache when it changed.
pub async fn refresh(cache: Arc<Cache>, state: crate::AppState, interval: Duration) {
    let mut last = fingerprint(state.engine().project());
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let engine = state.engine();
        let now = tokio::task::spawn_blocking(move || fingerprint(engine.project()))
            .await
            .ok()
            .flatten();
        if now.is_none() || now != last {
            tracing::debug!("the data may have changed: cached answers are dropped");
            cache.invalidate();
        }
        last = now;
    }
}
