//! The `$CM_RESULT` file a command may write its JSON result to.

use std::path::Path;

/// The most a `$CM_RESULT` file may hold.
const MAX_RESULT: u64 = 1024 * 1024;

/// The JSON in the result file, normalised; `None` when the command wrote none.
pub(super) fn read_result(path: &Path) -> Option<Result<String, String>> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > MAX_RESULT {
        return Some(Err(format!(
            "$CM_RESULT holds {} bytes, more than the {MAX_RESULT} a result may",
            meta.len()
        )));
    }
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) => return Some(Err(format!("reading $CM_RESULT: {e}"))),
    };
    Some(
        serde_json::from_slice::<serde_json::Value>(&text)
            .map(|v| v.to_string())
            .map_err(|e| format!("$CM_RESULT is not JSON: {e}")),
    )
}
