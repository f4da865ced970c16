//! A webhook receiver on loopback for the notification tests: it keeps every request it
//! gets, and answers with the status it is told (503 while "down").

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What it answered.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn envelope(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("an envelope of JSON")
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
}

pub struct Receiver {
    state: Arc<State>,
    pub url: String,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<State>>) -> HttpResponse {
    let status = state.status.load(Ordering::SeqCst);
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    state.received.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
        status,
    });
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish()
}

impl Receiver {
    /// Listening on a free loopback port, answering 200.
    pub fn start() -> Receiver {
        let state = Arc::new(State::default());
        state.status.store(200, Ordering::SeqCst);
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("bind the receiver");
        let address = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            state,
            url: format!("http://{address}/events"),
            handle,
        }
    }

    /// An endpoint `name` posting `events` here, retried quickly and for long.
    pub fn endpoint(
        &self,
        name: &str,
        events: &[ipfs_registry::config::EventKind],
    ) -> ipfs_registry::config::NotificationEndpoint {
        ipfs_registry::config::NotificationEndpoint {
            name: name.to_owned(),
            url: self.url.parse().unwrap(),
            events: events.to_vec(),
            repositories: Vec::new(),
            headers: Default::default(),
            secret: None,
            timeout: Duration::from_secs(5),
            max_attempts: 1000,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(200),
        }
    }

    /// What it answers from now on (503: "down").
    pub fn answer(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Every event of the envelopes it accepted (answered 2xx), in the order they came.
    pub fn accepted_events(&self) -> Vec<serde_json::Value> {
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| {
                r.envelope()["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Waits (up to a minute) until it has accepted at least `count` events; returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let events = self.accepted_events();
            if events.len() >= count {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} events arrived within a minute: {events:#?}",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to a minute) until it has been sent at least `count` requests, whatever
    /// it answered.
    pub async fn wait_for_requests(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.received().len() < count {
            assert!(
                Instant::now() < deadline,
                "{} of {count} requests arrived within a minute",
                self.received().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}
