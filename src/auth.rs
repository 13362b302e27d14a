//! The API's bearer token: read once from `api.token_file` (content trimmed), never printed, and
//! compared in constant time. Used by the API middleware (`api::auth`); reusable by other sinks.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path:?}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path:?} is empty")]
    Empty { path: String },
    #[error(
        "token in {path:?} must be printable ASCII without spaces (e.g. `openssl rand -hex 32`)"
    )]
    Charset { path: String },
}

/// A secret bearer token. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(Arc<str>);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// A token from text (trimmed). Printable ASCII without spaces: it travels in an HTTP header
    /// and a URL query.
    pub fn new(text: &str, path: &Path) -> Result<Self, TokenError> {
        let t = text.trim();
        let path = || path.display().to_string();
        if t.is_empty() {
            return Err(TokenError::Empty { path: path() });
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Charset { path: path() });
        }
        Ok(ApiToken(t.into()))
    }

    /// Reads the token from a file.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(&text, path)
    }

    /// Whether `candidate` is this token. The time taken does not depend on where the two differ
    /// (only on whether their lengths do).
    pub fn verify(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }

    /// The token itself, for a client that must present it (e.g. an upstream connection).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_trimmed_verified_and_redacted() {
        let t = ApiToken::new("  s3cr3t-token\n", Path::new("t")).expect("valid");
        assert!(t.verify("s3cr3t-token"));
        assert!(!t.verify("s3cr3t-tokeN"));
        assert!(!t.verify("s3cr3t-token "));
        assert!(!t.verify(""));
        assert_eq!(format!("{t:?}"), "ApiToken(<redacted>)");
    }

    #[test]
    fn empty_or_spaced_tokens_and_missing_files_are_errors_with_the_path() {
        let e = ApiToken::new(" \n", Path::new("/etc/tok")).unwrap_err();
        assert_eq!(e.to_string(), "token file \"/etc/tok\" is empty");
        let e = ApiToken::new("two words", Path::new("/etc/tok")).unwrap_err();
        assert!(e.to_string().contains("printable ASCII"), "{e}");
        let e = ApiToken::from_file(Path::new("/nonexistent/edgewatch-token")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read token file \"/nonexistent/edgewatch-token\": "),
            "{e}"
        );
    }

    #[test]
    fn reads_a_real_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("token");
        std::fs::write(&p, "abc123\n").expect("write");
        assert!(ApiToken::from_file(&p).expect("read").verify("abc123"));
    }
}
