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
