//! cm: an ops CLI, worker and web launcher for a RabbitMQ job queue (Celery protocol v2).

pub mod broker;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod exit;
pub mod inspect;
pub mod joblog;
pub mod jobs;
pub mod mq;
pub mod output;
pub mod privileges;
pub mod protocol;
pub mod publishing;
pub mod pyrepr;
pub mod remote;
pub mod results;
pub mod revoking;
pub mod store;
pub mod timestamp;
pub mod web;
pub mod worker;
