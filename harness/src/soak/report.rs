//! The soak's figures, its verdict and its table: what the samples say
//! about RSS and descriptors, and why a run failed.

use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;
use serde_json::Value;

use super::daemon::{Exit, LogWatch};
use super::roles::Tally;

/// The most RSS may grow after the warm-up: KiB, or a percentage of the
/// warm RSS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RssLimit {
    /// An absolute growth in KiB.
    Kib(u64),
    /// A growth relative to the warm RSS, in percent.
    Percent(f64),
}

impl FromStr for RssLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(number) = s.strip_suffix('%') {
            let pct: f64 = number
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage"))?;
            return if pct >= 0.0 {
                Ok(RssLimit::Percent(pct))
            } else {
                Err("a negative percentage".into())
            };
        }
        let bytes: junction::config::ByteSize = s.parse()?;
        Ok(RssLimit::Kib(bytes.0 / 1024))
    }
}

impl RssLimit {
    fn kib(self, warm: u64) -> u64 {
        match self {
            RssLimit::Kib(kib) => kib,
            RssLimit::Percent(pct) => (warm as f64 * pct / 100.0) as u64,
        }
    }
}

/// One sample of the daemon.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    /// RSS in KiB.
    pub rss_kib: u64,
    /// Open descriptors.
    pub fds: u64,
    /// Answers checked so far.
    pub answers: u64,
    /// Connections open on both listeners (rpc.stats).
    pub connections: u64,
    /// Output waiting to be written, bytes (rpc.stats).
    pub output_buffered: u64,
}

/// RSS figures, KiB.
#[derive(Debug, Serialize)]
pub struct RssFigures {
    /// Before the load.
    pub start: u64,
    /// The floor (lowest sample) of the first tenth after the warm-up.
    pub warm: u64,
    /// The floor of the last tenth under load.
    pub end: u64,
    /// Once the clients were gone.
    pub after: u64,
    /// The largest reading.
    pub max: u64,
    /// `end` - `warm`: what the verdict judges.
    pub growth: i64,
    /// The limit on `growth`.
    pub limit: u64,
    /// The largest sample after the warm-up minus `warm` (transients included).
    pub peak_growth: i64,
    /// Least-squares slope after the warm-up, KiB per minute.
    pub slope_per_min: f64,
}

/// Descriptor figures.
#[derive(Debug, Serialize)]
pub struct FdFigures {
    /// Before the load (the stats connection open).
    pub baseline: u64,
    /// The largest sample.
    pub max: u64,
    /// The last sample under load.
    pub under_load: u64,
    /// Once the clients were gone.
    pub end: u64,
    /// Seconds it took to get back to the baseline (or the settle limit).
    pub settle_secs: f64,
}

/// What a soak found.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    /// Which daemon.
    pub daemon: String,
    /// Its pid.
    pub pid: u32,
    /// Pooled calls were part of the mix.
    pub pooled: bool,
    /// Client threads.
    pub clients: usize,
    /// Seconds under load.
    pub seconds: f64,
    /// Warm-up seconds.
    pub warmup_secs: f64,
    /// RSS.
    pub rss_kib: RssFigures,
    /// Descriptors.
    pub fds: FdFigures,
    /// Answers checked and right.
    pub answers: u64,
    /// Answers per second.
    pub answers_per_sec: f64,
    /// Provoked errors received as expected.
    pub provoked_errors: u64,
    /// Connections the clients opened.
    pub connections: u64,
    /// Short-lived connections completed.
    pub churned: u64,
    /// Connections ended abruptly.
    pub abrupt: u64,
    /// Wrong answers.
    pub mismatches: u64,
    /// Unexpected failures.
    pub errors: u64,
    /// The first failures.
    pub failures: Vec<String>,
    /// Connections open at the daemon before and after (rpc.stats).
    pub open_connections: (u64, u64),
    /// Output buffered before and after (rpc.stats).
    pub output_buffered: (u64, u64),
    /// rpc.stats at the end.
    pub stats_end: Value,
    /// What the daemon logged at WARN and above.
    pub daemon_log: LogWatch,
    /// How a started daemon ended.
    pub exit: Option<Exit>,
    /// "flat" or "failed".
    pub verdict: &'static str,
    /// Why it failed.
    pub reasons: Vec<String>,
    /// Every sample.
    pub samples: Vec<Sample>,
}

/// What the run collected, for [`build`].
pub struct Readings {
    /// Which daemon.
    pub label: String,
    /// Its pid.
    pub pid: u32,
    /// Pooled calls were in the mix.
    pub pooled: bool,
    /// Client threads.
    pub clients: usize,
    /// Seconds under load.
    pub seconds: f64,
    /// Warm-up seconds.
    pub warmup: f64,
    /// The RSS limit.
    pub limit: RssLimit,
    /// RSS before the load, KiB.
    pub rss_start: u64,
    /// RSS once the clients were gone, KiB.
    pub rss_after: u64,
    /// Descriptors before the load.
    pub fds_baseline: u64,
    /// Descriptors once the clients were gone.
    pub fds_end: u64,
    /// Seconds the descriptors took to come back.
    pub settle_secs: f64,
    /// rpc.stats before the load.
    pub before: Value,
    /// rpc.stats once the clients were gone.
    pub after: Value,
    /// The daemon still ran at the end.
    pub alive: bool,
    /// What it logged.
    pub daemon_log: LogWatch,
    /// How it ended, when the harness started it.
    pub exit: Option<Exit>,
    /// Failures found by the run itself.
    pub reasons: Vec<String>,
    /// Every sample.
    pub samples: Vec<Sample>,
}

/// Connections open at the daemon, both listeners, from an rpc.stats result.
pub fn open_connections(stats: &Value) -> u64 {
    let c = &stats["connections"];
    c["unix"]["current"].as_u64().unwrap_or(0) + c["tcp"]["current"].as_u64().unwrap_or(0)
}

/// The figures and the verdict.
pub fn build(r: Readings, tally: &Tally) -> SoakReport {
    let samples = r.samples;
    let after_warm: Vec<&Sample> = samples.iter().filter(|s| s.t >= r.warmup).collect();
    let (warm, end) = floors(&after_warm).unwrap_or((r.rss_start, r.rss_start));
    let rss = RssFigures {
        start: r.rss_start,
        warm,
        end,
        after: r.rss_after,
        max: samples
            .iter()
            .map(|s| s.rss_kib)
            .chain([r.rss_start, r.rss_after])
            .max()
            .unwrap_or(r.rss_start),
        growth: end as i64 - warm as i64,
        limit: r.limit.kib(warm),
        peak_growth: after_warm.iter().map(|s| s.rss_kib).max().unwrap_or(warm) as i64
            - warm as i64,
        slope_per_min: slope(&after_warm),
    };
    let fds = FdFigures {
        baseline: r.fds_baseline,
        max: samples
            .iter()
            .map(|s| s.fds)
            .max()
            .unwrap_or(r.fds_baseline),
        under_load: samples.last().map_or(r.fds_baseline, |s| s.fds),
        end: r.fds_end,
        settle_secs: r.settle_secs,
    };
    let count = |c: &AtomicU64| c.load(Relaxed);
    let mut report = SoakReport {
        daemon: r.label,
        pid: r.pid,
        pooled: r.pooled,
        clients: r.clients,
        seconds: r.seconds,
        warmup_secs: r.warmup,
        answers: count(&tally.answers),
        answers_per_sec: count(&tally.answers) as f64 / r.seconds.max(1e-9),
        provoked_errors: count(&tally.provoked),
        connections: count(&tally.connections),
        churned: count(&tally.churned),
        abrupt: count(&tally.abrupt),
        mismatches: count(&tally.mismatches),
        errors: count(&tally.errors),
        failures: tally.log.lock().map(|l| l.clone()).unwrap_or_default(),
        open_connections: (open_connections(&r.before), open_connections(&r.after)),
        output_buffered: (
            r.before["output_buffered"].as_u64().unwrap_or(0),
            r.after["output_buffered"].as_u64().unwrap_or(u64::MAX),
        ),
        stats_end: r.after,
        daemon_log: r.daemon_log,
        exit: r.exit,
        verdict: "flat",
        reasons: r.reasons,
        rss_kib: rss,
        fds,
        samples,
    };
    judge(&mut report, r.alive);
    report
}

/// The RSS floors (lowest samples) of the first and the last window of
/// `samples`, each a tenth of them (at least 3). Large payloads and floods
/// make RSS swing by megabytes from one second to the next; the floor does
/// not move unless memory is kept, so floor to floor is the leak.
fn floors(samples: &[&Sample]) -> Option<(u64, u64)> {
    let window = (samples.len() / 10).max(3).min(samples.len());
    let floor = |part: &[&Sample]| part.iter().map(|s| s.rss_kib).min();
    let first = floor(&samples[..window])?;
    let last = floor(&samples[samples.len() - window..])?;
    Some((first, last))
}

/// Least-squares slope of RSS over time, KiB per minute.
fn slope(samples: &[&Sample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.t).sum::<f64>() / n;
    let mean_r = samples.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for s in samples {
        num += (s.t - mean_t) * (s.rss_kib as f64 - mean_r);
        den += (s.t - mean_t) * (s.t - mean_t);
    }
    if den > 0.0 { num / den * 60.0 } else { 0.0 }
}

/// Fills in the verdict and its reasons.
fn judge(r: &mut SoakReport, alive: bool) {
    let mut reasons = std::mem::take(&mut r.reasons);
    if !alive {
        reasons.push("the daemon died during the soak".into());
    }
    if r.mismatches > 0 {
        reasons.push(format!("{} wrong answers", r.mismatches));
    }
    if r.errors > 0 {
        reasons.push(format!("{} unexpected failures", r.errors));
    }
    if r.answers == 0 {
        reasons.push("no answers at all".into());
    }
    if r.rss_kib.growth > r.rss_kib.limit as i64 {
        reasons.push(format!(
            "RSS floor grew {} KiB after the warm-up (limit {} KiB)",
            r.rss_kib.growth, r.rss_kib.limit
        ));
    }
    if r.fds.end > r.fds.baseline {
        reasons.push(format!(
            "{} descriptors open after the clients left (baseline {})",
            r.fds.end, r.fds.baseline
        ));
    }
    if r.open_connections.1 > r.open_connections.0 {
        reasons.push(format!(
            "rpc.stats counts {} open connections after the clients left (before: {})",
            r.open_connections.1, r.open_connections.0
        ));
    }
    if r.output_buffered.1 > r.output_buffered.0 {
        reasons.push(format!(
            "rpc.stats output_buffered is {} after the clients left (before: {})",
            r.output_buffered.1, r.output_buffered.0
        ));
    }
    if r.daemon_log.errors > 0 {
        reasons.push(format!("the daemon logged {} errors", r.daemon_log.errors));
    }
    if let Some(exit) = &r.exit
        && exit.code != Some(0)
    {
        reasons.push(format!(
            "the daemon exited with {:?} after SIGTERM",
            exit.code
        ));
    }
    r.verdict = if reasons.is_empty() { "flat" } else { "failed" };
    r.reasons = reasons;
}

/// Prints the report as a table.
pub fn print_table(r: &SoakReport) {
    let rss = &r.rss_kib;
    let fds = &r.fds;
    println!(
        "soak of {} (pid {}) for {:.0} s, warm-up {:.0} s: {} clients, pooled calls: {}",
        r.daemon,
        r.pid,
        r.seconds,
        r.warmup_secs,
        r.clients,
        if r.pooled { "yes" } else { "no (none offered)" }
    );
    println!("                      start      warm       end     after       max");
    println!(
        "  RSS KiB        {:>9} {:>9} {:>9} {:>9} {:>9}",
        rss.start, rss.warm, rss.end, rss.after, rss.max
    );
    println!(
        "  open fds       {:>9} {:>9} {:>9} {:>9} {:>9}",
        fds.baseline, "-", fds.under_load, fds.end, fds.max
    );
    println!(
        "  RSS growth     {} KiB floor to floor after the warm-up (limit {} KiB); peaks {:+} KiB; slope {:+.1} KiB/min",
        rss.growth, rss.limit, rss.peak_growth, rss.slope_per_min
    );
    println!(
        "  descriptors    back to {} (baseline {}) {:.1} s after the clients left",
        fds.end, fds.baseline, fds.settle_secs
    );
    println!(
        "  answers        {} ({:.0}/s), all checked byte for byte",
        r.answers, r.answers_per_sec
    );
    println!(
        "  provoked errs  {} (each the expected error)",
        r.provoked_errors
    );
    println!(
        "  connections    {} opened; {} short-lived, {} ended abruptly",
        r.connections, r.churned, r.abrupt
    );
    let st = &r.stats_end;
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    println!(
        "  rpc.stats      {} frames, {} error replies; {} backpressure pauses, {} sniff \
         rejections, {} sniff timeouts",
        n(&st["protocols"]["jsonrpc"]["frames"]) + n(&st["protocols"]["mcp1"]["frames"]),
        n(&st["protocols"]["jsonrpc"]["errors"]) + n(&st["protocols"]["mcp1"]["errors"]),
        n(&st["backpressure_pauses"]),
        n(&st["connections"]["sniff_rejected"]),
        n(&st["connections"]["sniff_timeouts"]),
    );
    println!(
        "  open at end    {} connections (before: {}), {} bytes of output buffered (before: {})",
        r.open_connections.1, r.open_connections.0, r.output_buffered.1, r.output_buffered.0
    );
    println!("  mismatches     {}", r.mismatches);
    println!("  errors         {}", r.errors);
    for failure in &r.failures {
        println!("    {failure}");
    }
    let exit = r.exit.as_ref().map_or("left running".to_string(), |e| {
        format!("exit {:?} {:.2} s after SIGTERM", e.code, e.seconds)
    });
    println!(
        "  daemon         {} warnings, {} errors logged; {exit}",
        r.daemon_log.warnings, r.daemon_log.errors
    );
    for line in &r.daemon_log.lines {
        println!("    {line}");
    }
    println!("  verdict        {}", r.verdict);
    for reason in &r.reasons {
        println!("    {reason}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_as_sizes_or_percentages() {
        assert_eq!("10%".parse::<RssLimit>(), Ok(RssLimit::Percent(10.0)));
        assert_eq!("4MiB".parse::<RssLimit>(), Ok(RssLimit::Kib(4096)));
        assert_eq!("2048KiB".parse::<RssLimit>(), Ok(RssLimit::Kib(2048)));
        assert!("-3%".parse::<RssLimit>().is_err());
        assert_eq!(RssLimit::Percent(50.0).kib(1000), 500);
    }

    fn series(rss: impl Iterator<Item = u64>) -> Vec<Sample> {
        rss.enumerate()
            .map(|(i, rss_kib)| Sample {
                t: i as f64,
                rss_kib,
                fds: 0,
                answers: 0,
                connections: 0,
                output_buffered: 0,
            })
            .collect()
    }

    #[test]
    fn spikes_do_not_move_the_floor_and_a_leak_does() {
        let spiky = series((0..100).map(|i| if i % 4 == 1 { 9000 } else { 5000 }));
        let refs: Vec<&Sample> = spiky.iter().collect();
        assert_eq!(floors(&refs), Some((5000, 5000)));
        let leak = series((0..100).map(|i| 5000 + 10 * i + if i % 4 == 1 { 4000 } else { 0 }));
        let refs: Vec<&Sample> = leak.iter().collect();
        assert_eq!(floors(&refs), Some((5000, 5900)));
        assert_eq!(floors(&[]), None);
    }

    #[test]
    fn slope_is_per_minute() {
        let samples: Vec<Sample> = (0..10)
            .map(|i| Sample {
                t: i as f64,
                rss_kib: 1000 + i,
                fds: 0,
                answers: 0,
                connections: 0,
                output_buffered: 0,
            })
            .collect();
        let refs: Vec<&Sample> = samples.iter().collect();
        assert!((slope(&refs) - 60.0).abs() < 1e-9);
    }
}
