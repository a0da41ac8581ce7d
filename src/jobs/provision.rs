//! `cm.provision(host, image)`: a host walks INITIATING → PREPARING_IMAGE → BOOTING → AVAILABLE,
//! or `[provision] command` runs when the config has one.

use super::args::{Bound, Param};

pub const STEPS: &[&str] = &["INITIATING", "PREPARING_IMAGE", "BOOTING", "AVAILABLE"];

pub fn params() -> &'static [Param] {
    const PARAMS: &[Param] = &[Param::required("host"), Param::required("image")];
    PARAMS
}

#[derive(Debug, Clone, PartialEq)]
pub struct Provision {
    pub host: String,
    pub image: String,
}

impl Provision {
    pub fn from_bound(b: &Bound) -> Self {
        Self {
            host: b.text("host").unwrap_or_default(),
            image: b.text("image").unwrap_or_default(),
        }
    }

    pub fn args(host: &str, image: &str) -> Vec<serde_json::Value> {
        vec![host.into(), image.into()]
    }

    /// The values `[provision] command` can use.
    pub fn values(&self) -> Vec<(&'static str, String)> {
        vec![("host", self.host.clone()), ("image", self.image.clone())]
    }
}
