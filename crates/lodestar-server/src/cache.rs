//! The result cache: answers to `GET` API requests, keyed by the normalized request and the
//! data's version, with `ETag` and `Cache-Control` (and `304 Not Modified` for a matching
//! `If-None-Match`).
//!
//! A scheduled check (every `refresh` interval) looks for changed data: for `files` sources,
//! any file's size or modification time under the source's path; other sources cannot be
//! checked cheaply, so a project with one counts as changed at every check. When the data
//! changed, the most recently computed answers are recomputed in the background, through the
//! router (so under the same limits), and replace the old ones: the next request is a hit with
//! the new numbers. Until then the previous answers are served; the ones that could not be
//! recomputed are dropped.
//!
//! The cache is bounded in bytes (`--answer-cache-size`): the oldest answers go first. An
//! answer larger than a quarter of it is not kept: it is sent as it is computed, uncached,
//! without an `ETag`.
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lodestar_core::model::Project;
use sha2::{Digest, Sha256};

use crate::auth::Role;
use tower::ServiceExt;

/// An answer larger than this fraction of the cache is not kept.
const MAX_ENTRY_FRACTION: usize = 4;
/// Answers recomputed after a data change at most (the most recently computed ones).
const REFRESH_MAX: usize = 64;

/// Marks a request made by the background refresh: it is computed even when cached, and
/// replaces the cached answer. Only the server can set it (it is not a header).
#[derive(Debug, Clone, Copy)]
pub struct Refresh;

/// The `X-Cache` header: `hit` when the answer came from the cache, `miss` when computed.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

#[derive(Debug)]
pub struct Cache {
    entries: Mutex<Entries>,
    /// The project's version: a reload makes every answer unreachable.
    version: AtomicU64,
    /// The data's generation, one more at every change seen; an answer records the
    /// generation its computation started in.
    generation: AtomicU64,
    max_age: Duration,
    /// The most bytes of answers kept.
    capacity: usize,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Answers recomputed in the background after a data change.
    pub refreshed: AtomicU64,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    order: VecDeque<Key>,
    /// The bytes of the entries in `map`, keys included.
    bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// Who asked: an admin's answer may hold what a read token must not see.
    role: Role,
    path: String,
    /// The parameters sorted by name; repeated ones keep their order (it matters for `by`).
    params: Vec<(String, String)>,
    arrow: bool,
    version: u64,
}

impl Key {
    fn size(&self) -> usize {
        self.path.len()
            + self
                .params
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + std::mem::size_of::<Key>()
    }
}

impl Entry {
    fn size(&self) -> usize {
        self.body.len() + self.etag.len() + std::mem::size_of::<Entry>()
    }
}

impl Entries {
    fn remove(&mut self, key: &Key) {
        if let Some(entry) = self.map.remove(key) {
            self.bytes -= key.size() + entry.size();
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    etag: HeaderValue,
    content_type: Option<HeaderValue>,
    /// An answer's own Content-Security-Policy (the HTML report's), kept with it.
    policy: Option<HeaderValue>,
    body: Bytes,
    generation: u64,
}

impl Cache {
    /// A cache of at most `capacity` bytes of answers, fresh for `max_age`.
    pub fn new(max_age: Duration, capacity: usize) -> Cache {
        Cache {
            capacity,
            entries: Mutex::default(),
            version: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            max_age,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            refreshed: AtomicU64::new(0),
        }
    }

    /// Makes every cached answer stale.
    pub fn invalidate(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.map.clear();
        entries.order.clear();
        entries.bytes = 0;
    }

    /// The largest answer kept, in bytes.
    fn max_entry(&self) -> usize {
        self.capacity / MAX_ENTRY_FRACTION
    }

    /// The bytes of answers kept.
    pub fn bytes(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    fn get(&self, key: &Key) -> Option<Entry> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.map.get(key).cloned()
    }

    /// Keeps an answer, unless the project was reloaded since it was asked for, or a newer
    /// answer (computed on newer data) is kept already.
    fn put(&self, key: Key, entry: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if key.version != self.version.load(Ordering::SeqCst) {
            return;
        }
        if let Some(kept) = entries.map.get(&key)
            && kept.generation > entry.generation
        {
            return;
        }
        let size = key.size() + entry.size();
        if size > self.max_entry() {
            return;
        }
        entries.remove(&key);
        entries.order.retain(|k| k != &key);
        entries.bytes += size;
        entries.map.insert(key.clone(), entry);
        entries.order.push_back(key);
        while entries.bytes > self.capacity {
            match entries.order.pop_front() {
                Some(old) => entries.remove(&old),
                None => break,
            }
        }
    }

    /// The keys of the `n` answers computed last, newest first.
    fn newest(&self, n: usize) -> Vec<Key> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.order.iter().rev().take(n).cloned().collect()
    }

    /// Drops the answers computed on data older than `generation`; returns how many.
    fn drop_older_than(&self, generation: u64) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let old: Vec<Key> = entries
            .map
            .iter()
            .filter(|(_, entry)| entry.generation < generation)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &old {
            entries.remove(key);
        }
        let Entries { map, order, .. } = &mut *entries;
        order.retain(|key| map.contains_key(key));
        old.len()
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
            if let Some(policy) = entry.policy {
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_SECURITY_POLICY, policy);
                headers.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
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
        // Set by `auth::require_token`, which runs first.
        role: request
            .extensions()
            .get::<Role>()
            .copied()
            .unwrap_or(Role::Read),
        path: request.uri().path().to_string(),
        params,
        arrow: crate::encode::Format::of(request.headers()) == crate::encode::Format::Arrow,
        version: cache.version.load(Ordering::SeqCst),
    };
    let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
    let refresh = request.extensions().get::<Refresh>().is_some();
    if !refresh {
        if let Some(entry) = cache.get(&key) {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            let mut response = cache.respond(entry, if_none_match.as_ref());
            response
                .headers_mut()
                .insert(X_CACHE, HeaderValue::from_static("hit"));
            return response;
        }
        cache.misses.fetch_add(1, Ordering::Relaxed);
    }
    let generation = cache.generation.load(Ordering::SeqCst);
    let response = next.run(request).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let body = match read_up_to(body, cache.max_entry()).await {
        Ok(Whole(body)) => body,
        Ok(TooLarge(body)) => {
            // Too large to keep: sent as it comes, uncached.
            tracing::debug!(
                max = cache.max_entry(),
                "an answer larger than a quarter of the cache is sent uncached"
            );
            parts
                .headers
                .insert(X_CACHE, HeaderValue::from_static("miss"));
            return Response::from_parts(parts, body);
        }
        Err(e) => {
            tracing::warn!("an answer could not be read: {e}");
            return crate::error::ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding_failed",
                "the answer could not be read",
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
        policy: parts.headers.get(header::CONTENT_SECURITY_POLICY).cloned(),
        body,
        generation,
    };
    cache.put(key, entry.clone());
    let mut response = cache.respond(entry, if_none_match.as_ref());
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static("miss"));
    response
}

/// An answer's body, read whole when it is at most the limit.
enum Read {
    Whole(Bytes),
    /// Over the limit: what was read, then the rest, as a body to send on.
    TooLarge(Body),
}
use Read::{TooLarge, Whole};

async fn read_up_to(body: Body, limit: usize) -> Result<Read, axum::Error> {
    use axum::body::HttpBody;
    use futures::StreamExt;
    if body.size_hint().lower() > limit as u64 {
        return Ok(TooLarge(body));
    }
    let mut stream = body.into_data_stream();
    let mut read = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if read.len() + chunk.len() > limit {
            let head = futures::stream::iter([Ok(Bytes::from(read)), Ok(chunk)]);
            return Ok(TooLarge(Body::from_stream(head.chain(stream))));
        }
        read.extend_from_slice(&chunk);
    }
    Ok(Whole(Bytes::from(read)))
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

/// Checks the data every `interval`; when it changed, recomputes the answers computed last
/// through `app` (the server's router: the same handlers, query slots, time and memory
/// limits), at most `concurrency` at once, then drops the answers that could not be.
pub async fn refresh(
    cache: Arc<Cache>,
    state: crate::AppState,
    app: Router,
    interval: Duration,
    concurrency: usize,
) {
    let mut last = fingerprint(state.shared_engine().project());
    crate::metrics::compute_north_stars(&state).await;
    let mut ticks = tokio::time::interval(interval);
    // A round slower than the interval delays the next check rather than piling them up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let engine = state.shared_engine();
        let now = tokio::task::spawn_blocking(move || fingerprint(engine.project()))
            .await
            .ok()
            .flatten();
        if now.is_none() || now != last {
            recompute(&cache, &app, concurrency).await;
            crate::metrics::compute_north_stars(&state).await;
        }
        last = now;
    }
}

/// One refresh round: a new data generation, the newest answers recomputed, the rest dropped.
async fn recompute(cache: &Cache, app: &Router, concurrency: usize) {
    let generation = cache.generation.fetch_add(1, Ordering::SeqCst) + 1;
    let keys = cache.newest(REFRESH_MAX);
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for key in keys {
        let Ok(request) = key.request() else {
            continue;
        };
        let app = app.clone();
        let slots = Arc::clone(&slots);
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            match app.oneshot(request).await {
                Ok(response) if response.status() == StatusCode::OK => true,
                Ok(response) => {
                    tracing::debug!(
                        path = %key.path,
                        status = response.status().as_u16(),
                        "a cached answer could not be recomputed; it is dropped"
                    );
                    false
                }
                Err(never) => match never {},
            }
        });
    }
    let mut recomputed = 0;
    while let Some(done) = tasks.join_next().await {
        if done.unwrap_or(false) {
            recomputed += 1;
        }
    }
    let dropped = cache.drop_older_than(generation);
    cache.refreshed.fetch_add(recomputed, Ordering::Relaxed);
    if recomputed > 0 || dropped > 0 {
        tracing::info!(
            recomputed,
            dropped,
            "the data changed: cached answers recomputed"
        );
    } else {
        tracing::debug!("the data may have changed; nothing was cached");
    }
}

impl Key {
    /// The `GET` request this key stands for, marked as a refresh.
    fn request(&self) -> Result<Request, axum::http::Error> {
        let mut uri = self.path.clone();
        if !self.params.is_empty() {
            let query = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&self.params)
                .finish();
            uri.push('?');
            uri.push_str(&query);
        }
        let mut builder = Request::builder().method(Method::GET).uri(uri);
        if self.arrow {
            builder = builder.header(header::ACCEPT, crate::encode::ARROW_STREAM);
        }
        let mut request = builder.body(Body::empty())?;
        request.extensions_mut().insert(Refresh);
        request.extensions_mut().insert(self.role);
        Ok(request)
    }
}
