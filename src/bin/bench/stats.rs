//! Latency samples and the few statistics the report needs.

use std::time::Duration;

use serde::Serialize;

/// Request latencies of one measurement, and how long it ran.
#[derive(Debug, Clone)]
pub struct Latencies {
    sorted: Vec<Duration>,
    wall: Duration,
}

impl Latencies {
    pub fn new(mut samples: Vec<Duration>, wall: Duration) -> Latencies {
        samples.sort_unstable();
        Latencies {
            sorted: samples,
            wall,
        }
    }

    /// Nearest-rank percentile, in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.sorted.len()) - 1;
        self.sorted[index].as_secs_f64() * 1000.0
    }

    pub fn per_second(&self) -> f64 {
        self.sorted.len() as f64 / self.wall.as_secs_f64()
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            per_second: self.per_second(),
            p50_ms: self.percentile_ms(50.0),
            p99_ms: self.percentile_ms(99.0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// MB/s (10^6 bytes per second).
pub fn megabytes_per_second(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let latencies = Latencies::new(samples, Duration::from_secs(2));
        assert_eq!(latencies.percentile_ms(50.0), 50.0);
        assert_eq!(latencies.percentile_ms(99.0), 99.0);
        assert_eq!(latencies.per_second(), 50.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(megabytes_per_second(2_000_000, Duration::from_secs(2)), 1.0);
    }
}
