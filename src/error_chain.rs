//! An error's message with the messages of its sources: clients of other services
//! (reqwest, tokio-postgres, rustls) keep the reason in the source ("error performing TLS
//! handshake" alone does not say that the certificate was refused, nor why).

/// `e` and each source that adds something ("error sending request: client error
/// (Connect): tcp connect error: Connection refused (os error 111)").
pub fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
