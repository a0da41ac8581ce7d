//! The rpc:// result backend's message: what a Celery client's `AsyncResult.get()` reads from
//! its `reply_to` queue (celery/backends/rpc.py), for a job that ended.

use lapin::BasicProperties;
use serde_json::{json, Value};

/// The status and result of a job's end, as the reply carries them: SUCCESS with its result
/// (JSON text), FAILURE and REVOKED with the error as an exception Celery rebuilds.
pub fn status_and_result(
    state: &str,
    result: Option<&str>,
    error: Option<&str>,
) -> (&'static str, Value) {
    let exception = |exc_type: &str, module: &str| json!({"exc_type": exc_type, "exc_message": [error.unwrap_or_default()], "exc_module": module});
    match state {
        "SUCCESS" => {
            let text = result.unwrap_or("null");
            // Our own JSON text: it always parses back.
            let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()));
            ("SUCCESS", value)
        }
        "REVOKED" => (
            "REVOKED",
            exception("TaskRevokedError", "celery.exceptions"),
        ),
        _ => ("FAILURE", exception("JobFailed", "builtins")),
    }
}

/// The reply for job `task_id` (`correlation_id`: the message's, else the id): body and
/// properties.
pub fn reply(
    task_id: &str,
    correlation_id: &str,
    status: &str,
    result: Value,
) -> (Vec<u8>, BasicProperties) {
    let body = json!({
        "task_id": task_id, "status": status, "result": result,
        "traceback": null, "children": [],
        "date_done": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    });
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_correlation_id(correlation_id.into());
    (body.to_string().into_bytes(), props)
}
