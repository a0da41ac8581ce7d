//! What every handler shares: the config, the store, the sessions (with their form-token key),
//! the `Host` names served, and the request counter; and the bearer token's comparison, made in
//! constant time.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use super::host::ServedHosts;
use super::session::{same_secret, Sessions};
use crate::amqp::Brokers;
use crate::config::Config;
use crate::store::Store;

/// The name `[web] token` goes by in the access log.
pub const TOKEN_NAME: &str = "token";

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    store: Store,
    sessions: Sessions,
    hosts: ServedHosts,
    /// `[broker] url`, for every connection the handlers make.
    brokers: Brokers,
    /// Requests answered, for `/metrics`.
    requests: Counter,
}

impl AppState {
    /// For a server on `[web] bind`.
    pub fn new(cfg: Config, store: Store) -> Self {
        let bind = cfg.web_bind.clone();
        Self::listening(cfg, store, &bind, None)
    }

    /// For a server asked to listen on `bind` that got `addr`.
    pub fn listening(cfg: Config, store: Store, bind: &str, addr: Option<SocketAddr>) -> Self {
        Self {
            inner: Arc::new(Inner {
                sessions: Sessions::new(cfg.web_tls.is_some()),
                hosts: ServedHosts::new(bind, addr),
                brokers: Brokers::of(&cfg),
                cfg,
                store,
                requests: Counter::default(),
            }),
        }
    }

    pub fn cfg(&self) -> &Config {
        &self.inner.cfg
    }

    pub fn brokers(&self) -> &Brokers {
        &self.inner.brokers
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    pub fn served_hosts(&self) -> &ServedHosts {
        &self.inner.hosts
    }

    pub fn requests(&self) -> &Counter {
        &self.inner.requests
    }

    /// The token's name when `presented` is `[web] token`; none when none is configured.
    pub fn token_name(&self, presented: &str) -> Option<&'static str> {
        self.cfg()
            .web_token
            .as_deref()
            .is_some_and(|token| same_secret(presented, token))
            .then_some(TOKEN_NAME)
    }
}
