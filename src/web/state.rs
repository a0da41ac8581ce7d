//! What every handler shares: the config, the store, this process's form token and the request
//! counter; and the two secret comparisons (bearer token, form token) made in constant time.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    store: Store,
    /// Per-process CSRF token, embedded in every form and checked on every form POST.
    csrf: String,
    /// Requests answered, for `/metrics`.
    requests: Counter,
}

impl AppState {
    pub fn new(cfg: Config, store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                store,
                csrf: uuid::Uuid::new_v4().to_string(),
                requests: Counter::default(),
            }),
        }
    }

    pub fn cfg(&self) -> &Config {
        &self.inner.cfg
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn csrf(&self) -> &str {
        &self.inner.csrf
    }

    pub fn requests(&self) -> &Counter {
        &self.inner.requests
    }

    /// Whether `presented` is `[web] token`; false when none is configured.
    pub fn is_token(&self, presented: &str) -> bool {
        self.cfg()
            .web_token
            .as_deref()
            .is_some_and(|token| same_secret(presented, token))
    }

    /// Whether a form's `csrf` field is this process's form token.
    pub fn is_csrf(&self, field: Option<&str>) -> bool {
        field.is_some_and(|f| same_secret(f, self.csrf()))
    }
}

/// Equal in time independent of where the first difference is, so a token cannot be guessed
/// byte by byte from response times (the length is not secret).
fn same_secret(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }
}
