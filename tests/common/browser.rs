//! Headless Chromium for tests: `chromedriver` on a free port, one WebDriver session through
//! fantoccini, and the waits a page that updates itself needs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{closed_port, eventually, web::client};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// `chromedriver --port=N` and a fresh browser profile for one test, both gone when dropped.
pub struct Browser {
    child: Child,
    url: String,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts the driver, logging to `dir/chromedriver.log`, and waits until it is ready.
    pub fn start(dir: &Path) -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "headless Chromium is missing: run scripts/ensure-chromium.sh"
        );
        let port = closed_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("driver log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn chromedriver");
        let browser = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profile: tempfile::tempdir().expect("profile dir"),
        };
        let http = client();
        eventually(
            Duration::from_secs(30),
            "chromedriver to answer /status",
            || {
                http.get(format!("{}/status", browser.url))
                    .send()
                    .ok()
                    .and_then(|r| r.json::<Value>().ok())
                    .is_some_and(|v| v["value"]["ready"] == true)
            },
        );
        browser
    }

    /// A new headless window (1400x860) on this driver.
    pub async fn session(&self) -> fantoccini::Client {
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                    "--window-size=1400,860",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ]
            }),
        );
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("WebDriver session")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where screenshots go: `$CM_SCREENSHOTS` (e.g. docs/screenshots, relative to the repository)
/// or `fallback`.
pub fn screenshot_dir(fallback: &Path) -> PathBuf {
    match std::env::var_os("CM_SCREENSHOTS") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let dir = if dir.is_absolute() {
                dir
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
            };
            std::fs::create_dir_all(&dir).expect("screenshot dir");
            dir
        }
        None => fallback.to_path_buf(),
    }
}

/// Saves what the window shows as `dir/name`.
pub async fn screenshot(c: &fantoccini::Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(name), png).unwrap_or_else(|e| panic!("save {name}: {e}"));
}

/// Polls `probe` every 100 ms until it gives a value; panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens `url` in the window.
pub async fn open(c: &fantoccini::Client, url: &str) {
    c.goto(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
}

/// Clicks what `locator` finds, which must be there.
pub async fn click(c: &fantoccini::Client, locator: fantoccini::Locator<'_>) {
    c.find(locator)
        .await
        .unwrap_or_else(|e| panic!("no {locator:?} to click: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {locator:?}: {e}"));
}

/// The text of what `css` finds, which must be there.
pub async fn text(c: &fantoccini::Client, css: &str) -> String {
    c.find(fantoccini::Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// The text of every element `css` matches (none when nothing does yet).
pub async fn texts(c: &fantoccini::Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(found) = c.find_all(fantoccini::Locator::Css(css)).await {
        for e in found {
            out.push(e.text().await.unwrap_or_default());
        }
    }
    out
}
