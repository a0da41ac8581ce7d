//! `GET /metrics` in the Prometheus text format (0.0.4), encoded by `prometheus-client`:
//! jobs per state, a histogram of job run times, workers up and messages waiting per queue,
//! each schedule's last firing and missed slots, and this server's request counter. Everything but the counter is read fresh on each scrape.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use prometheus_client::encoding::{prometheus_text, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use super::data::worker_statuses;
use super::state::AppState;
use crate::amqp::Brokers;
use crate::config::Config;
use crate::store::{DurationHistogram, JobFilter};

/// Upper bounds of the run-time buckets, in seconds.
pub const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];
/// A scrape must not wait on a broker that is down: the depths are left out after this.
const BROKER_TIMEOUT: Duration = Duration::from_secs(2);

type Labels = Vec<(String, String)>;

/// Counts every request this server answers (`cm_web_requests_total`).
pub async fn count_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    state.requests().inc();
    next.run(req).await
}

/// A histogram whose buckets the database already counted.
#[derive(Debug)]
struct StoredHistogram {
    sum_seconds: f64,
    count: u64,
    /// (upper bound, jobs in this bucket only), `+Inf` last.
    buckets: Vec<(f64, u64)>,
}

impl StoredHistogram {
    fn new(h: &DurationHistogram) -> Self {
        let as_u64 = |n: i64| u64::try_from(n).unwrap_or(0);
        let mut buckets = Vec::with_capacity(h.at_most.len() + 1);
        let mut below = 0;
        for (bound_ms, at_most) in &h.at_most {
            buckets.push((*bound_ms as f64 / 1000.0, as_u64(at_most - below)));
            below = *at_most;
        }
        buckets.push((f64::INFINITY, as_u64(h.count - below)));
        Self {
            sum_seconds: h.sum_ms as f64 / 1000.0,
            count: as_u64(h.count),
            buckets,
        }
    }
}

impl TypedMetric for StoredHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for StoredHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

fn gauges<'a>(values: impl IntoIterator<Item = (&'a str, String, i64)>) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    for (label, value, n) in values {
        family
            .get_or_create(&vec![(label.to_string(), value)])
            .set(n);
    }
    family
}

/// Messages waiting in each configured queue (passive declares: nothing is created); `None`
/// when the broker does not answer in time. A queue not declared yet is left out.
async fn queue_depths(cfg: &Config, brokers: &Brokers) -> Option<Vec<(String, u32)>> {
    let name = format!("cm web metrics@{}", cfg.node_host);
    let work = async {
        let conn = brokers.connect(&name).await.ok()?;
        let mut depths = Vec::new();
        for q in &cfg.queues {
            // A passive declare of a missing queue closes its channel: one channel per queue.
            let Ok(channel) = conn.create_channel().await else {
                continue;
            };
            let options = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            if let Ok(declared) = channel
                .queue_declare(q.name.as_str().into(), options, FieldTable::default())
                .await
            {
                depths.push((q.name.clone(), declared.message_count()));
                let _ = channel.close(200, "metrics".into()).await;
            }
        }
        let _ = conn.close(200, "metrics".into()).await;
        Some(depths)
    };
    tokio::time::timeout(BROKER_TIMEOUT, work).await.ok()?
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let store = state.store();
    let bounds: Vec<i64> = BUCKETS
        .iter()
        .map(|s| (s * 1000.0).round() as i64)
        .collect();
    let counts = store.counts_by_state(&JobFilter::default()).await;
    let histogram = store.duration_histogram(&bounds).await;
    let (counts, histogram) = match (counts, histogram) {
        (Ok(c), Ok(h)) => (c, h),
        (Err(e), _) | (_, Err(e)) => {
            return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
    };
    let (workers, depths) = tokio::join!(
        worker_statuses(&state),
        queue_depths(state.cfg(), state.brokers())
    );

    let mut registry = Registry::default();
    registry.register(
        "cm_jobs",
        "Jobs in the status store, by state",
        gauges(counts.into_iter().map(|(s, n)| ("state", s, n))),
    );
    registry.register(
        "cm_job_duration_seconds",
        "Run time of finished jobs (finished - started)",
        StoredHistogram::new(&histogram),
    );
    let mut up: BTreeMap<&str, i64> = state
        .cfg()
        .queues
        .iter()
        .map(|q| (q.name.as_str(), 0))
        .collect();
    for w in &workers {
        if matches!(w.state, "running" | "orphan") {
            *up.entry(w.queue.as_str()).or_default() += 1;
        }
    }
    registry.register(
        "cm_workers_up",
        "Workers of this host running, by queue",
        gauges(up.into_iter().map(|(q, n)| ("queue", q.to_string(), n))),
    );
    if let Some(depths) = depths {
        registry.register(
            "cm_queue_depth",
            "Messages waiting in the broker, by queue",
            gauges(depths.into_iter().map(|(q, n)| ("queue", q, i64::from(n)))),
        );
    }
    // A store that does not answer here already failed the scrape above.
    if let Ok(schedules) = crate::client::schedules::overview(state.cfg(), store).await {
        let fired = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let missed = Family::<Labels, Counter>::default();
        for s in &schedules {
            let label = vec![("schedule".to_string(), s.name.clone())];
            if let Some(last) = &s.last {
                fired
                    .get_or_create(&label)
                    .set(last.fired_ms as f64 / 1000.0);
            }
            missed
                .get_or_create(&label)
                .inc_by(u64::try_from(s.missed).unwrap_or(0));
        }
        registry.register(
            "cm_schedule_last_fire_timestamp_seconds",
            "When each schedule last fired (its newest firing, Unix time)",
            fired,
        );
        registry.register(
            "cm_schedule_missed_slots",
            "Slots of each schedule that passed unfired after downtime (by its catch_up)",
            missed,
        );
    }
    registry.register(
        "cm_web_requests",
        "Requests this web server answered since it started",
        state.requests().clone(),
    );

    let mut body = String::new();
    if let Err(e) = prometheus_text::encode(&mut body, &registry) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_buckets_become_per_bucket_counts_with_inf_last() {
        let h = StoredHistogram::new(&DurationHistogram {
            at_most: vec![(10, 1), (100, 3), (1000, 3)],
            count: 5,
            sum_ms: 2500,
        });
        assert_eq!(h.count, 5);
        assert_eq!(h.sum_seconds, 2.5);
        assert_eq!(
            h.buckets,
            vec![(0.01, 1), (0.1, 2), (1.0, 0), (f64::INFINITY, 2)]
        );
        let mut registry = Registry::default();
        registry.register("t_seconds", "t", h);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("t_seconds_bucket{le=\"0.1\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 5\n"), "{text}");
        assert!(text.contains("t_seconds_count 5\n"), "{text}");
    }
}
