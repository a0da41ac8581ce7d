//! `cm.provision(host, image)`: a host walks INITIATING → PREPARING_IMAGE → BOOTING → AVAILABLE.

use super::{arg_str, JobError, PROVISION};
use crate::protocol::TaskMessage;

pub const STEPS: &[&str] = &["INITIATING", "PREPARING_IMAGE", "BOOTING", "AVAILABLE"];

#[derive(Debug, Clone, PartialEq)]
pub struct Provision {
    pub host: String,
    pub image: String,
}

impl Provision {
    pub fn from_message(msg: &TaskMessage) -> Result<Self, JobError> {
        let missing = |what: &str| JobError::BadArgs {
            task: PROVISION,
            why: format!("missing {what} (args: [host, image])"),
        };
        Ok(Self {
            host: arg_str(msg, PROVISION, 0, "host")?.ok_or_else(|| missing("host"))?,
            image: arg_str(msg, PROVISION, 1, "image")?.ok_or_else(|| missing("image"))?,
        })
    }

    pub fn args(host: &str, image: &str) -> Vec<serde_json::Value> {
        vec![host.into(), image.into()]
    }
}
