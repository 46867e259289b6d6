//! `junction latency`: round trips of `rpc.ping`, measured continuously
//! and summed up per interval (min, avg, p50, p99, max), like
//! `redis-cli --latency-history`. On a terminal the line is refreshed in
//! place; otherwise one line per interval, so scripts can read it.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use junction::client::Client;

use crate::Failure;

/// How to sample and report.
pub struct Options {
    /// Length of one report.
    pub interval: Duration,
    /// Pause between two round trips.
    pub every: Duration,
    /// Reports to print before exiting (None: until interrupted).
    pub count: Option<u64>,
    /// One JSON object per report.
    pub json: bool,
}

/// One interval's figures, in microseconds.
struct Report {
    samples: usize,
    min: u64,
    avg: u64,
    p50: u64,
    p99: u64,
    max: u64,
}

impl Report {
    /// Figures of `samples` (sorted here); None when empty.
    fn of(samples: &mut [u64]) -> Option<Report> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let pick = |q: f64| {
            let rank = (q * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        let sum: u64 = samples.iter().sum();
        Some(Report {
            samples: samples.len(),
            min: samples[0],
            avg: sum / samples.len() as u64,
            p50: pick(0.50),
            p99: pick(0.99),
            max: samples[samples.len() - 1],
        })
    }

    fn line(&self, json: bool) -> String {
        if json {
            return serde_json::json!({
                "samples": self.samples,
                "min_us": self.min,
                "avg_us": self.avg,
                "p50_us": self.p50,
                "p99_us": self.p99,
                "max_us": self.max,
            })
            .to_string();
        }
        format!(
            "min {}  avg {}  p50 {}  p99 {}  max {}  ({} samples)",
            show(self.min),
            show(self.avg),
            show(self.p50),
            show(self.p99),
            show(self.max),
            self.samples
        )
    }
}

/// Microseconds for a person: µs below a millisecond, else ms.
fn show(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else {
        format!("{:.2}ms", us as f64 / 1000.0)
    }
}

/// Measures until `count` reports were printed (or forever).
pub fn run(client: &mut Client, options: &Options) -> Result<(), Failure> {
    let interval = options.interval.max(Duration::from_millis(10));
    let in_place = std::io::stdout().is_terminal() && !options.json;
    let mut samples: Vec<u64> = Vec::with_capacity(1024);
    let mut printed = 0u64;
    let mut started = Instant::now();
    while options.count.is_none_or(|n| printed < n) {
        let sent = Instant::now();
        client.call("rpc.ping", None).map_err(crate::failure)?;
        let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        if samples.len() < 1 << 20 {
            samples.push(us);
        }
        if started.elapsed() >= interval {
            if let Some(report) = Report::of(&mut samples) {
                emit(&report.line(options.json), in_place)?;
                printed += 1;
            }
            samples.clear();
            started = Instant::now();
            continue;
        }
        std::thread::sleep(options.every);
    }
    if in_place {
        println!();
    }
    Ok(())
}

fn emit(line: &str, in_place: bool) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = if in_place {
        write!(out, "\r\x1b[K{line}")
    } else {
        writeln!(out, "{line}")
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Connection(format!("cannot write to stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ranks_of_the_sorted_samples() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        let r = Report::of(&mut samples).expect("report");
        assert_eq!((r.min, r.p50, r.p99, r.max, r.avg), (1, 50, 99, 100, 50));
        assert!(Report::of(&mut []).is_none());
        assert_eq!(show(999), "999µs");
        assert_eq!(show(1500), "1.50ms");
    }
}
