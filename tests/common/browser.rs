//! Headless Chromium, driven the way a person looks at the web UI: a page's rendered DOM,
//! and a phone-sized screenshot kept under `target/ui-screenshots/` for a person to look
//! at (CI keeps that directory as an artifact).

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> &'static str {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(candidate).arg("--version").output().is_ok() {
            return candidate;
        }
    }
    panic!("headless Chromium is needed for the web UI tests (apt-get install chromium)");
}

fn chromium_args(profile: &Path) -> Vec<String> {
    vec![
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--no-first-run".into(),
        format!("--user-data-dir={}", profile.display()),
    ]
}

/// Runs Chromium without blocking the test's runtime: on a current-thread runtime a
/// blocking wait would starve the registry's database connection, which lives on that
/// runtime, and the page would time out.
async fn run(profile: &Path, args: &[String]) -> Vec<u8> {
    let out = tokio::process::Command::new(chromium())
        .args(chromium_args(profile))
        .args(args)
        .output()
        .await
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The page as Chromium rendered it (its DOM, serialised).
pub async fn rendered(url: &str, profile: &Path) -> String {
    let dom = run(profile, &["--dump-dom".into(), url.to_owned()]).await;
    String::from_utf8(dom).unwrap()
}

/// Where the screenshots of a test run go.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    target.join("ui-screenshots")
}

/// A phone-sized (390 px wide) screenshot of `url`, saved as `<name>.png` in
/// [`screenshot_dir`]; asserts that a PNG was written.
pub async fn screenshot(url: &str, profile: &Path, name: &str) -> PathBuf {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&shot);
    run(
        profile,
        &[
            "--window-size=390,1200".into(),
            "--hide-scrollbars".into(),
            format!("--screenshot={}", shot.display()),
            url.to_owned(),
        ],
    )
    .await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", shot.display());
    shot
}

/// The `href`s of the rendered page's links whose text or target contains `needle`.
pub fn links(dom: &str, needle: &str) -> Vec<String> {
    let link = regex::Regex::new(r#"<a [^>]*href="([^"]+)"[^>]*>(.*?)</a>"#).unwrap();
    link.captures_iter(dom)
        .filter(|c| c[1].contains(needle) || c[2].contains(needle))
        .map(|c| c[1].replace("&amp;", "&"))
        .collect()
}

/// Headless Chromium driven over the DevTools protocol: one tab that navigates, types into
/// forms, clicks and reads the page like a person, with the cookies and the `Origin`
/// headers a real browser keeps and sends.
pub struct Tab {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    session: String,
    next_id: u64,
    /// Page loads seen: a main-frame navigation to a page (not `about:blank`) followed by
    /// its load event, whenever they arrive (even while a command waits for its reply).
    loads: u64,
    navigated: bool,
    _chromium: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// How long one DevTools step (a command, a page load) may take.
const STEP: std::time::Duration = std::time::Duration::from_secs(30);

impl Tab {
    /// A fresh browser (its own profile: no cookies) with one phone-sized tab.
    pub async fn open() -> Tab {
        use tokio::io::AsyncBufReadExt as _;
        let profile = tempfile::tempdir().unwrap();
        let mut chromium = tokio::process::Command::new(chromium())
            .args(chromium_args(profile.path()))
            .arg("--remote-debugging-port=0")
            .arg("about:blank")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run chromium");
        let stderr = chromium.stderr.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let url = tokio::time::timeout(STEP, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("chromium ended without a DevTools address");
        })
        .await
        .expect("chromium's DevTools address");
        // Chromium stops if its stderr is closed: keep reading it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect to DevTools");
        let mut tab = Tab {
            ws,
            session: String::new(),
            next_id: 0,
            loads: 0,
            navigated: false,
            _chromium: chromium,
            _profile: profile,
        };
        let target = tab
            .command(
                "Target.createTarget",
                serde_json::json!({ "url": "about:blank" }),
            )
            .await;
        let attached = tab
            .command(
                "Target.attachToTarget",
                serde_json::json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        tab.session = attached["sessionId"].as_str().unwrap().to_owned();
        tab.command("Page.enable", serde_json::json!({})).await;
        tab.command(
            "Emulation.setDeviceMetricsOverride",
            serde_json::json!({
                "width": 390, "height": 1200, "deviceScaleFactor": 1, "mobile": true,
            }),
        )
        .await;
        tab
    }

    /// Counts a page load when `event` completes one.
    fn observe(&mut self, event: &serde_json::Value) {
        match event["method"].as_str() {
            Some("Page.frameNavigated") => {
                let frame = &event["params"]["frame"];
                if frame["parentId"].is_null() && frame["url"] != "about:blank" {
                    self.navigated = true;
                }
            }
            Some("Page.loadEventFired") if self.navigated => {
                self.navigated = false;
                self.loads += 1;
            }
            _ => {}
        }
    }

    /// Sends a command (to the tab once attached) and returns its result; events that
    /// arrive meanwhile are observed.
    async fn command(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use futures::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        self.next_id += 1;
        let id = self.next_id;
        let mut message = serde_json::json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = self.session.clone().into();
        }
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
        tokio::time::timeout(STEP, async {
            loop {
                let Some(Ok(Message::Text(text))) = self.ws.next().await else {
                    continue;
                };
                let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
                if reply["id"] == id {
                    assert!(reply["error"].is_null(), "{method}: {reply}");
                    return reply["result"].clone();
                }
                self.observe(&reply);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method} timed out"))
    }

    /// Runs a command and waits until the page it leads to has loaded.
    async fn and_load(&mut self, method: &str, params: serde_json::Value) {
        use futures::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        let before = self.loads;
        self.command(method, params).await;
        tokio::time::timeout(STEP, async {
            while self.loads == before {
                let Some(Ok(Message::Text(text))) = self.ws.next().await else {
                    continue;
                };
                let event: serde_json::Value = serde_json::from_str(&text).unwrap();
                self.observe(&event);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no page load"));
    }

    pub async fn goto(&mut self, url: &str) {
        self.and_load("Page.navigate", serde_json::json!({ "url": url }))
            .await;
    }

    /// The value of a JavaScript expression in the page (DevTools runs it whatever the
    /// page's CSP says: the pages themselves run no scripts).
    pub async fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self
            .command(
                "Runtime.evaluate",
                serde_json::json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// The page's path and its rendered DOM.
    pub async fn page(&mut self) -> (String, String) {
        let path = self.eval("location.pathname + location.search").await;
        let dom = self.eval("document.documentElement.outerHTML").await;
        (
            path.as_str().unwrap().to_owned(),
            dom.as_str().unwrap().to_owned(),
        )
    }

    /// Types `value` into the input named `name`.
    pub async fn fill(&mut self, name: &str, value: &str) {
        let expression = format!(
            "document.querySelector({}).value = {}",
            serde_json::to_string(&format!("input[name={name}]")).unwrap(),
            serde_json::to_string(value).unwrap(),
        );
        self.eval(&expression).await;
    }

    /// Clicks the first button matching `selector` and waits for the page it leads to.
    pub async fn click(&mut self, selector: &str) {
        let expression = format!(
            "document.querySelector({}).click()",
            serde_json::to_string(selector).unwrap()
        );
        self.and_load(
            "Runtime.evaluate",
            serde_json::json!({ "expression": expression }),
        )
        .await;
    }

    /// A screenshot of the page as it is, saved as `<name>.png` in [`screenshot_dir`].
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let shot = self
            .command(
                "Page.captureScreenshot",
                serde_json::json!({ "format": "png" }),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}
