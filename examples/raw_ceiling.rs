//! The broker's ceiling for cm's message pattern, without cm: one publisher (persistent messages,
//! publisher confirms, pipelined) and one consumer (prefetch 100, manual ack) on a fresh durable
//! queue. `bench/run.sh` compares cm's end-to-end rate against this.
//!
//! `cargo run --release --example raw_ceiling -- [--celery] N [QUEUE] [BROKER_URL]`
//! Prints one JSON line: messages, seconds (first publish to last ack), publish_seconds, rate.
//!
//! `--celery` sends cm's own messages (Celery protocol v2: a fresh task id, 14 headers and the
//! properties a Celery client sets, from `cm::celery::message`) instead of the same body with only a
//! content type: what the broker itself can do with the message format cm must speak.

use std::time::Instant;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const PREFETCH: u16 = 100;

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let celery = argv.iter().any(|a| a == "--celery");
    let mut args = argv.into_iter().filter(|a| a != "--celery");
    let n: usize = args
        .next()
        .unwrap_or_else(|| "10000".into())
        .parse()
        .map_err(|e| anyhow::anyhow!("N must be a number of messages: {e}"))?;
    let queue = args
        .next()
        .unwrap_or_else(|| format!("raw_ceiling_{}", std::process::id()));
    let url = args
        .next()
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(n, &queue, &url, celery))
}

async fn run(n: usize, queue: &str, url: &str, celery: bool) -> anyhow::Result<()> {
    let pub_conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let con_conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let pub_ch = pub_conn.create_channel().await?;
    let con_ch = con_conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    pub_ch
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await?;
    pub_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    con_ch
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = con_ch
        .basic_consume(
            queue.into(),
            "raw_ceiling".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    // About the size of a cm.launch message body.
    let body = format!(
        "[[], {{\"server\": \"india_openstack_essex\", \"recipe\": \"Hadoop\", \"kind\": \"vm\", \
         \"hosts\": \"x\", \"user\": null}}, {{\"callbacks\": null, \"errbacks\": null, \
         \"chain\": null, \"chord\": null}}]{}",
        " ".repeat(64)
    );
    let started = Instant::now();
    let consume = tokio::spawn(async move {
        let mut acked = 0usize;
        while acked < n {
            match consumer.next().await {
                Some(Ok(delivery)) => {
                    delivery.ack(BasicAckOptions::default()).await?;
                    acked += 1;
                }
                Some(Err(e)) => return Err(anyhow::Error::new(e)),
                None => anyhow::bail!("consumer cancelled after {acked} messages"),
            }
        }
        Ok(started.elapsed())
    });

    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let kwargs = serde_json::json!({
        "server": "india_openstack_essex", "recipe": "Hadoop", "kind": "vm", "hosts": "x", "user": null
    });
    let mut confirms = Vec::with_capacity(n);
    for _ in 0..n {
        let encoded;
        let (body, props) = if celery {
            let kwargs = kwargs.as_object().cloned().unwrap_or_default();
            encoded = cm::celery::message::TaskMessage::new("cm.launch", Vec::new(), kwargs)
                .encode("raw_ceiling");
            (encoded.0.as_slice(), encoded.1)
        } else {
            (body.as_bytes(), props.clone())
        };
        let confirm = pub_ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await?;
        confirms.push(confirm);
    }
    for confirm in confirms {
        let outcome = confirm.await?;
        anyhow::ensure!(outcome.is_ack(), "the broker nacked a publish");
    }
    let publish_seconds = started.elapsed().as_secs_f64();
    let seconds = consume.await??.as_secs_f64();

    let _ = pub_ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let _ = pub_conn.close(200, "done".into()).await;
    let _ = con_conn.close(200, "done".into()).await;
    println!(
        "{{\"messages\": {n}, \"seconds\": {seconds:.4}, \"publish_seconds\": {publish_seconds:.4}, \"rate\": {:.1}}}",
        n as f64 / seconds
    );
    Ok(())
}
