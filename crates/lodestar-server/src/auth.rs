//! Bearer-token authentication with two roles, read and admin.
//!
//! Tokens come from the environment (`LODESTAR_READ_TOKENS`, `LODESTAR_ADMIN_TOKENS`, comma
//! separated) or from a tokens file, which holds only SHA-256 hashes: `ROLE HEX [label]` per
//! line. Only hashes are kept in memory; a presented token is hashed and compared with each in
//! constant time. A request without a valid token gets a bare 401: no hint of which part was
//! wrong. Tokens are never logged.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Every GET endpoint.
    Read,
    /// Read, and ad-hoc SQL when it is enabled.
    Admin,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The accepted tokens, as SHA-256 hashes.
#[derive(Clone, Default)]
pub struct Tokens {
    hashes: Vec<(Role, [u8; 32])>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hashes are not secrets, but there is no reason to print them either.
        f.debug_struct("Tokens")
            .field("count", &self.hashes.len())
            .finish()
    }
}

/// A tokens file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: expected `ROLE SHA256-HEX [label]` with ROLE read or admin and 64 hex digits\n  hint: the hash of a token is `printf %s TOKEN | sha256sum`"
    )]
    Line { path: String, line: usize },
    #[error(
        "the tokens file {path} holds no token: it would turn authentication off\n  hint: add `ROLE SHA256-HEX [label]` lines (docs/server.md#authentication), or do not pass --tokens-file (without tokens the server listens on loopback only)"
    )]
    Empty { path: String },
}

fn digest(token: &str) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(&Sha256::digest(token.as_bytes()));
    out
}

impl Tokens {
    /// No token: authentication is off.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Accepts `token` (given in clear, as from the environment) for `role`.
    pub fn add(&mut self, role: Role, token: &str) {
        self.hashes.push((role, digest(token)));
    }

    /// Tokens of `LODESTAR_READ_TOKENS` and `LODESTAR_ADMIN_TOKENS` (comma separated).
    pub fn add_from_env(&mut self) {
        for (var, role) in [
            ("LODESTAR_READ_TOKENS", Role::Read),
            ("LODESTAR_ADMIN_TOKENS", Role::Admin),
        ] {
            if let Ok(value) = std::env::var(var) {
                for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    self.add(role, token);
                }
            }
        }
    }

    /// The tokens of the environment (see [`Tokens::add_from_env`]) and of `file`, if given.
    pub fn load(file: Option<&Path>) -> Result<Tokens, TokensError> {
        let mut tokens = Tokens::default();
        tokens.add_from_env();
        if let Some(file) = file {
            tokens.add_file(file)?;
        }
        Ok(tokens)
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Reads a tokens file: `ROLE SHA256-HEX [label]` lines; blank lines and `#` comments. A
    /// file without any token is an error: it must not turn authentication off.
    pub fn add_file(&mut self, path: &Path) -> Result<(), TokensError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut found = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let role = words.next().and_then(Role::parse);
            let hash = words
                .next()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
            match (role, hash) {
                (Some(role), Some(hash)) => found.push((role, hash)),
                _ => {
                    return Err(TokensError::Line {
                        path: shown,
                        line: i + 1,
                    });
                }
            }
        }
        if found.is_empty() {
            return Err(TokensError::Empty { path: shown });
        }
        self.hashes.extend(found);
        Ok(())
    }

    /// The role of a presented token, comparing with every hash in constant time.
    fn role_of(&self, token: &str) -> Option<Role> {
        let presented = digest(token);
        let mut found = None;
        for (role, hash) in &self.hashes {
            let difference = hash
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                found = found.max(Some(*role));
            }
        }
        found
    }
}

/// Checks the bearer token of every request it guards, and records the caller's role.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let tokens = state.tokens();
    // The background refresh recomputes answers that a caller with a token asked for, with
    // that caller's role (set by the cache).
    if request
        .extensions()
        .get::<crate::cache::Refresh>()
        .is_some()
    {
        if request.extensions().get::<Role>().is_none() {
            request.extensions_mut().insert(Role::Read);
        }
        return next.run(request).await;
    }
    if tokens.is_empty() {
        // No tokens: the server listens on loopback only (or was started with
        // --allow-anonymous), and a warning said so at start: everyone reads.
        request.extensions_mut().insert(Role::Read);
        return next.run(request).await;
    }
    let role = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| tokens.role_of(token.trim()));
    match role {
        Some(role) => {
            request.extensions_mut().insert(role);
            next.run(request).await
        }
        None => {
            let mut response =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized")
                    .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_by_hash_and_the_highest_role_wins() {
        let mut tokens = Tokens::default();
        tokens.add(Role::Read, "reader");
        let file = tempfile::NamedTempFile::new().unwrap();
        // sha256("boss"), as `printf %s boss | sha256sum` prints it.
        let hash = hex::encode(Sha256::digest(b"boss"));
        std::fs::write(file.path(), format!("# admins\nadmin {hash} ops\n\n")).unwrap();
        tokens.add_file(file.path()).unwrap();
        assert_eq!(tokens.role_of("reader"), Some(Role::Read));
        assert_eq!(tokens.role_of("boss"), Some(Role::Admin));
        assert_eq!(tokens.role_of("Boss"), None);
        assert_eq!(tokens.role_of(""), None);
    }

    #[test]
    fn a_tokens_file_without_tokens_is_an_error_naming_it() {
        let file = tempfile::NamedTempFile::new().unwrap();
        for text in ["", "\n\n", "# only a comment\n   \n# another\n"] {
            std::fs::write(file.path(), text).unwrap();
            let mut tokens = Tokens::default();
            let error = tokens.add_file(file.path()).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains(&format!("{} holds no token", file.path().display())),
                "{error}"
            );
            assert!(tokens.is_empty());
        }
    }

    #[test]
    fn a_bad_line_is_reported_with_its_number() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "read 1234\n").unwrap();
        let error = Tokens::default().add_file(file.path()).unwrap_err();
        assert!(error.to_string().contains(":1: expected `ROLE SHA256-HEX"));
    }
}
