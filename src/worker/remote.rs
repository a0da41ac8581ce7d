//! What this worker tells others over the broker about itself, on each session's connection:
//!
//! - the `cm.control` ping of `cm queue status --all` (wire format: `crate::amqp::inspect`);
//! - Celery's remote control: the answers to `celery inspect` / `celery control` / Flower, in
//!   the shapes of `crate::celery::replies` (the queue and the replies are `pidbox.rs`);
//! - Celery's events: the session's events channel goes to the publisher (`events.rs`).
//!
//! `revoke` and `terminate` are not answered from memory: they go to the status store as
//! `cm jobs revoke`'s do (`revokes::Revoker`), so every worker sees them, and they outlast
//! restarts.
//!
//! [`Remote`] outlives sessions: its clock, running jobs and event switch stay across reconnects.

use std::sync::Arc;
use std::time::Instant;

use lapin::Connection;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::events::Events;
use super::flow::{self, Flow};
use super::revokes::Revoker;
use super::running::Running;
use super::shutdown::RemoteStop;
use super::stats::Counters;
use crate::amqp::inspect::{self, RemoteWorker};
use crate::amqp::{self, BrokerError};
use crate::celery::clock::LamportClock;
use crate::celery::control::Request;
use crate::celery::event_format::Origin;
use crate::celery::replies::{self, Method, Rusage, Stats};
use crate::config::{Config, WorkerRef};
use crate::jobs::cancel::{signal_named, SIGNALS};

/// A worker's remote side, shared by its sessions and its job handlers.
pub(super) struct Remote {
    pub(super) node: String,
    pid: u32,
    started: Instant,
    pub(super) clock: Arc<LamportClock>,
    pub(super) running: Arc<Running>,
    pub(super) events: Arc<Events>,
    stats: Arc<Counters>,
    pub(super) stop: RemoteStop,
    /// What `cm queue status --all` is told.
    name: String,
    host: String,
    queue: String,
    quorum: bool,
    concurrency: u16,
    prefetch: u16,
    /// `stats` → `broker` and `conf`: fixed for the worker's life.
    broker: Value,
    conf: Value,
    /// `registered`: cm's own tasks and the config's command tasks.
    tasks: Vec<String>,
    /// `[broker] url`, to name the node connected to now (`cm queue status --all`).
    brokers: amqp::Brokers,
    /// Where `revoke` and `terminate` go: the store, for every worker, and this one at once.
    revoker: Revoker,
    /// Pause and scale orders, read from the store; `add_consumer` and the pool methods write them.
    pub(super) flow: Arc<Flow>,
}

/// What a request gets.
pub(super) enum Answer {
    Reply(Value),
    /// `shutdown`: Celery's worker stops without a word.
    Shutdown,
}

impl Remote {
    /// `utcoffset`: [`crate::celery::event_format::python_utcoffset`] of this host's zone.
    pub(super) fn new(
        cfg: &Config,
        worker: WorkerRef<'_>,
        stats: &Arc<Counters>,
        stop: RemoteStop,
        utcoffset: i64,
        revoker: Revoker,
        brokers: &amqp::Brokers,
    ) -> Arc<Self> {
        let node = cfg.node_name(worker.name);
        let pid = std::process::id();
        let clock = Arc::new(LamportClock::default());
        let running = Arc::new(Running::default());
        let origin = Origin {
            hostname: node.clone(),
            pid,
            utcoffset,
        };
        let events = Events::start(origin, clock.clone(), running.clone(), cfg.send_events);
        let queue = worker.queue;
        let conf = json!({
            "broker_url": crate::config::urls::redact(&cfg.broker_url),
            "broker_heartbeat": amqp::HEARTBEAT_SECONDS,
            "task_serializer": "json",
            "accept_content": ["json"],
            "task_acks_late": true,
            "worker_concurrency": queue.concurrency,
            "worker_send_task_events": cfg.send_events,
            "event_exchange": crate::celery::event_format::EXCHANGE,
            "control_exchange": "celery",
            "task_queues": [queue.name],
            "cm_prefetch": queue.prefetch,
            "cm_retries": queue.retries,
            "cm_config": cfg.path.display().to_string(),
        });
        let flow = Arc::new(Flow::new(
            revoker.store.clone(),
            queue,
            &cfg.node_host,
            &node,
        ));
        Arc::new(Self {
            flow,
            node,
            pid,
            started: Instant::now(),
            clock,
            running,
            events,
            stats: stats.clone(),
            stop,
            name: worker.name.to_string(),
            host: cfg.node_host.clone(),
            queue: queue.name.clone(),
            quorum: queue.quorum,
            concurrency: queue.concurrency,
            prefetch: queue.prefetch,
            broker: replies::broker_info(
                &cfg.broker_url,
                amqp::HEARTBEAT_SECONDS,
                amqp::CONNECT_TIMEOUT.as_secs(),
            ),
            conf,
            tasks: crate::config::BUILT_IN
                .iter()
                .map(|t| t.to_string())
                .chain(cfg.tasks.keys().cloned())
                .collect(),
            brokers: brokers.clone(),
            revoker,
        })
    }

    /// Starts answering `cm queue status --all`'s ping on a new session's connection: the one
    /// part of the remote side a session requires.
    pub(super) async fn answer_pings(
        self: &Arc<Self>,
        conn: &Arc<Connection>,
        url: &str,
    ) -> Result<(), BrokerError> {
        let me = self.clone();
        let status = move || me.cm_status();
        inspect::answer_pings(conn, url, self.queue.clone(), status).await
    }

    /// Sends events on a new session's connection (`worker-online` first); a channel that fails
    /// is logged and the worker runs jobs without events.
    pub(super) async fn send_events_on(&self, conn: &Connection) {
        let events = match conn.create_channel().await {
            Ok(channel) => self.events.attach(channel).await,
            Err(e) => Err(e),
        };
        if let Err(e) = events {
            warn!("events off for this connection: {e}");
        }
    }

    /// This worker's answer to `cm queue status --all`.
    fn cm_status(&self) -> RemoteWorker {
        let me = nix::unistd::Pid::this();
        let s = self.stats.snapshot();
        RemoteWorker {
            node: self.node.clone(),
            name: self.name.clone(),
            host: self.host.clone(),
            queue: self.queue.clone(),
            pid: self.pid,
            state: if s.paused { "paused" } else { "running" }.into(),
            concurrency: s.concurrency,
            desired_concurrency: s.desired_concurrency,
            uptime_seconds: crate::control::procs::uptime(me).map(|d| d.as_secs()),
            memory_bytes: crate::control::procs::rss_bytes(me),
            jobs_done: s.jobs_done,
            jobs_failed: s.jobs_failed,
            broker: self.brokers.connected_node(),
        }
    }

    /// `inspect scheduled`: the jobs of this worker's queue the store holds SCHEDULED (their
    /// eta ahead), shaped as Celery lists its eta requests. Any worker of the queue may run
    /// one when it is due: each worker of the queue lists them all.
    async fn scheduled(&self) -> Value {
        let filter = crate::store::JobFilter {
            state: Some(crate::store::SCHEDULED.into()),
            queue: Some(self.queue.clone()),
            limit: 1000,
            ..crate::store::JobFilter::default()
        };
        let rows = match self.revoker.store.list(&filter).await {
            Ok(rows) => rows,
            Err(e) => return replies::error(&e.to_string()),
        };
        let listed: Vec<Value> = rows
            .iter()
            .map(|row| {
                let (args, kwargs): (Value, Value) =
                    serde_json::from_str(&row.job.args).unwrap_or((json!([]), json!({})));
                json!({
                    "eta": row.job.options.eta_ms.map(crate::celery::timestamp::format_ms),
                    "priority": 0,
                    "request": {
                        "id": row.job.id,
                        "name": row.job.task,
                        "args": args,
                        "kwargs": kwargs,
                        "type": row.job.task,
                        "hostname": self.node,
                        "time_start": Value::Null,
                        // Its message was acked once the store held it.
                        "acknowledged": true,
                        "delivery_info": {
                            "exchange": "",
                            "routing_key": self.queue,
                            "priority": 0,
                            "redelivered": false,
                        },
                        "worker_pid": self.pid,
                    },
                })
            })
            .collect();
        json!(listed)
    }

    /// Awaited by the pidbox's one task: `revoke`, `terminate` and `scheduled` wait (for the
    /// store).
    pub(super) async fn answer(&self, request: &Request) -> Answer {
        let Some(method) = Method::from_name(&request.method) else {
            return Answer::Reply(replies::unknown_method(&request.method));
        };
        Answer::Reply(match method {
            Method::Ping => replies::ok("pong"),
            Method::Stats => self.stats_reply(),
            Method::Active => {
                json!(self
                    .running
                    .list(&self.node, self.pid, request.flag_argument("safe")))
            }
            // The jobs held unstarted over a second while every job slot is busy (recorded so
            // in the store); those prefetched a moment ago are the client library's still.
            Method::Reserved => {
                json!(self
                    .running
                    .reserved(&self.node, self.pid, request.flag_argument("safe")))
            }
            Method::Scheduled => self.scheduled().await,
            Method::Revoked => json!(self.revoker.revoked.ids()),
            Method::Registered => {
                let names: Vec<&str> = self.tasks.iter().map(String::as_str).collect();
                replies::registered(&names)
            }
            Method::ActiveQueues => json!([replies::queue_info(&self.queue, self.quorum)]),
            Method::Conf => self.conf.clone(),
            Method::Clock => json!({"clock": self.clock.value()}),
            Method::Hello => replies::hello(
                &self.node,
                request.text_argument("from_node"),
                self.clock.forward(),
            ),
            Method::Shutdown => return Answer::Shutdown,
            Method::EnableEvents => {
                if self.events.set_enabled(true) {
                    info!("task events enabled by remote control");
                    replies::ok("task events enabled")
                } else {
                    replies::ok("task events already enabled")
                }
            }
            Method::DisableEvents => {
                if self.events.set_enabled(false) {
                    info!("task events disabled by remote control");
                    replies::ok("task events disabled")
                } else {
                    replies::ok("task events already disabled")
                }
            }
            Method::Heartbeat => {
                self.events.heartbeat_now();
                Value::Null
            }
            // `terminate SIG ID...` is `revoke ID... terminate=True signal=SIG` (Celery's).
            Method::Revoke => {
                let terminate = request.flag_argument("terminate");
                self.revoke(request, terminate).await
            }
            Method::Terminate => self.revoke(request, true).await,
            Method::AddConsumer
            | Method::CancelConsumer
            | Method::PoolGrow
            | Method::PoolShrink
            | Method::Autoscale => {
                flow::celery::answer(
                    &self.flow,
                    method,
                    request,
                    &self.running,
                    &self.revoker.stops,
                )
                .await
            }
            Method::RateLimit => flow::celery::rate_limit(&self.flow, &self.tasks, request).await,
        })
    }

    /// `revoke` and `terminate`, the way `cm jobs revoke` does them (durable in the store, seen
    /// by every worker within its poll), taken in here at once; answered as Celery answers.
    async fn revoke(&self, request: &Request, terminate: bool) -> Value {
        let ids = request.task_ids();
        let signal = match request.arguments.get("signal").map(signal_of).transpose() {
            Ok(signal) => signal.flatten(),
            Err(e) => return replies::error(&e),
        };
        // Asked before the terminate: a job it ends leaves the registry soon after.
        let here = if terminate {
            self.running.running_of(&ids)
        } else {
            Vec::new()
        };
        match self.revoker.revoke(&ids, terminate, signal).await {
            Ok(reports) => {
                for r in &reports {
                    info!("{} over remote control: {}", request.method, r.describe());
                }
                if terminate {
                    replies::terminating(&here)
                } else {
                    replies::flagged_as_revoked(&ids)
                }
            }
            Err(e) => {
                warn!(
                    "{} of [{}] over remote control: {e}; nothing revoked",
                    request.method,
                    ids.join(", ")
                );
                replies::error(&format!("revoking in the status store: {e}"))
            }
        }
    }

    fn stats_reply(&self) -> Value {
        let counts = self.stats.snapshot();
        Stats {
            total: self.running.totals(),
            pid: self.pid,
            clock: self.clock.value(),
            uptime_seconds: self.started.elapsed().as_secs(),
            // The slots now (`cm queue scale`), and the prefetch that goes with them.
            concurrency: counts.concurrency.unwrap_or(self.concurrency),
            prefetch_count: counts
                .concurrency
                .map_or(self.prefetch, |n| self.flow.prefetch_for(n)),
            broker: self.broker.clone(),
            rusage: rusage(),
            jobs_done: counts.jobs_done,
            jobs_failed: counts.jobs_failed,
            events_dropped: self.events.dropped(),
        }
        .to_value()
    }
}

/// The signal a revoke names, as Celery takes it (`_signals.signum`): a name with or without
/// `SIG`, or a number; null is the default (SIGTERM).
fn signal_of(v: &Value) -> Result<Option<Signal>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(name) => signal_named(name).map(Some),
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .and_then(|n| Signal::try_from(n).ok())
            .filter(|s| SIGNALS.contains(s))
            .map(Some)
            .ok_or_else(|| format!("signal {n} does not end a job here")),
        other => Err(format!("signal {other} is neither a name nor a number")),
    }
}

fn rusage() -> Option<Rusage> {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(Rusage {
        utime: seconds(u.user_time()),
        stime: seconds(u.system_time()),
        maxrss: u.max_rss(),
        minflt: u.minor_page_faults(),
        majflt: u.major_page_faults(),
        inblock: u.block_reads(),
        oublock: u.block_writes(),
        nvcsw: u.voluntary_context_switches(),
        nivcsw: u.involuntary_context_switches(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revokes_signal_is_a_name_a_number_or_the_default() {
        assert_eq!(signal_of(&Value::Null), Ok(None));
        assert_eq!(signal_of(&json!("KILL")), Ok(Some(Signal::SIGKILL)));
        assert_eq!(signal_of(&json!("SIGUSR1")), Ok(Some(Signal::SIGUSR1)));
        assert_eq!(signal_of(&json!(9)), Ok(Some(Signal::SIGKILL)));
        assert!(signal_of(&json!(19)).is_err(), "SIGSTOP ends nothing");
        assert!(signal_of(&json!("STOP")).is_err());
        assert!(signal_of(&json!([1])).is_err());
    }
}
