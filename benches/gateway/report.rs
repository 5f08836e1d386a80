//! The markdown the harness prints (the figures, the memory and start-up lines, the targets)
//! and the pass/fail checks of the smoke run.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::h2load::H2load;
use crate::load::Load;

/// Checks that a run's calls did what they should (the smoke test's assertions).
#[derive(Default)]
pub struct Checks {
    results: Vec<(String, bool, String)>,
}

impl Checks {
    pub fn expect(&mut self, what: &str, ok: bool, detail: String) {
        if !ok {
            eprintln!("FAILED: {what}: {detail}");
        }
        self.results.push((what.to_string(), ok, detail));
    }

    /// Every call of `load` succeeded, and there were some.
    pub fn calls(&mut self, what: &str, load: &Load) {
        self.expect(
            what,
            load.calls > 0 && load.errors == 0,
            format!("{} calls, {} errors", load.calls, load.errors),
        );
    }

    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.1).count()
    }

    /// The closing line: `gateway bench: N passed, M failed`.
    pub fn summary(&self) -> String {
        let failed = self.failed();
        format!(
            "gateway bench: {} passed, {failed} failed",
            self.results.len() - failed
        )
    }
}

/// One line of the figures table.
pub struct Row {
    pub scenario: String,
    pub concurrency: String,
    pub rate: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub rss: Option<f64>,
    /// The server's CPU time per call (user + system, warm-up included), in microseconds.
    pub cpu_us: Option<f64>,
    pub note: String,
}

impl Row {
    pub fn closed(scenario: &str, concurrency: usize, load: &Load, rss: Option<f64>) -> Row {
        Row {
            scenario: scenario.to_string(),
            concurrency: concurrency.to_string(),
            rate: load.rate(),
            p50: load.ms(0.5),
            p99: load.ms(0.99),
            p999: load.ms(0.999),
            rss,
            cpu_us: None,
            note: if load.errors > 0 {
                format!("{} errors", load.errors)
            } else {
                String::new()
            },
        }
    }
}

/// What the targets are judged on.
pub struct Figures<'a> {
    pub baseline: &'a BTreeMap<usize, Load>,
    pub full_stack: &'a BTreeMap<usize, Load>,
    pub echo_h2: &'a [H2load],
    pub echo_paced: &'a Load,
    pub stack_paced: &'a Load,
    pub echo_callers: &'a Load,
    pub stack_callers: &'a Load,
    pub stack_h2: &'a [H2load],
    pub high: usize,
    pub low: usize,
    pub get_stream: &'a Load,
    pub cycles: &'a Load,
    pub direct: &'a Load,
    pub via: &'a Load,
    pub direct_far: &'a Load,
    pub via_far: &'a Load,
    pub far: Duration,
    pub exact: bool,
    pub wall: Duration,
    pub floor: f64,
    pub idle: f64,
    pub under_b: f64,
    pub startup: Duration,
}

/// The printed report.
pub struct Report {
    full: bool,
    rows: Vec<Row>,
    lines: Vec<String>,
    /// What, the figure, and whether the target is met (`None`: tracked, not a target).
    targets: Vec<(String, String, Option<bool>)>,
    /// The watchers' memory targets, listed after the others.
    watch_targets: Vec<(String, String, Option<bool>)>,
    notes: Vec<String>,
    /// Markdown printed after the notes (the fleet's tables).
    sections: Vec<String>,
}

fn cell(value: f64, digits: usize) -> String {
    if value.is_nan() {
        "–".into()
    } else {
        format!("{value:.digits$}")
    }
}

impl Report {
    pub fn new(full: bool) -> Self {
        Report {
            full,
            rows: Vec::new(),
            lines: Vec::new(),
            targets: Vec::new(),
            watch_targets: Vec::new(),
            notes: Vec::new(),
            sections: Vec::new(),
        }
    }

    pub fn row(&mut self, row: Row) {
        if self.full {
            eprintln!(
                "  {} @ {}: {:.0}/s p50 {:.3} ms p99 {:.3} ms",
                row.scenario, row.concurrency, row.rate, row.p50, row.p99
            );
        }
        self.rows.push(row);
    }

    pub fn note(&mut self, note: &str) {
        self.notes.push(note.to_string());
    }

    pub fn memory(&mut self, idle: f64, under_b: f64) {
        self.lines.push(format!("- RSS idle: {idle:.1} MiB"));
        self.lines
            .push(format!("- RSS under (b), peak: {under_b:.1} MiB"));
    }

    /// The line and the target of `n` open WatchStream subscribers of `local` streams.
    pub fn watchers_local(&mut self, idle: f64, with: f64, n: usize) {
        self.watchers(String::new(), idle, with, n);
    }

    /// The same of KVS streams, polled (one poller per watched stream).
    pub fn watchers_kvs(&mut self, idle: f64, with: f64, n: usize) {
        self.watchers(" of KVS streams (polled)".into(), idle, with, n);
    }

    fn watchers(&mut self, of: String, idle: f64, with: f64, n: usize) {
        self.lines.push(format!(
            "- RSS with {n} open WatchStream subscribers{of}: {with:.1} MiB (before: \
             {idle:.1} MiB; {:.1} KiB per subscriber)",
            (with - idle) * 1024.0 / n as f64
        ));
        self.watch_targets.push((
            format!("{n} WatchStream subscribers{of} ≤ 200 MiB"),
            format!("{with:.1} MiB"),
            Some(with <= 200.0),
        ));
    }

    /// Markdown lines printed after the notes.
    pub fn section(&mut self, lines: Vec<String>) {
        self.sections.push(lines.join("\n"));
    }

    pub fn startup(&mut self, median: Duration, max: Duration, n: usize) {
        self.lines.push(format!(
            "- start-up to health SERVING (fresh SQLite store, {n} starts): median {:.1} ms, \
             max {:.1} ms",
            median.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        ));
    }

    fn target(&mut self, what: &str, measured: String, met: bool) {
        self.targets.push((what.to_string(), measured, Some(met)));
    }

    /// A figure kept in the table to follow it across runs, no longer a target.
    fn tracked(&mut self, what: &str, measured: String) {
        self.targets.push((what.to_string(), measured, None));
    }

    pub fn targets(&mut self, f: Figures<'_>) {
        let (a_high, b_high) = (&f.baseline[&f.high], &f.full_stack[&f.high]);
        let (a_low, b_low) = (&f.baseline[&f.low], &f.full_stack[&f.low]);
        let ratio = b_high.rate() / a_high.rate();
        self.tracked(
            &format!(
                "(b) ÷ (a) calls/s at {} (tonic client; the retired target was ≥ 0.85 ×)",
                f.high
            ),
            format!("{ratio:.2} ×"),
        );
        if let (Some(a), Some(b)) = (f.echo_h2.first(), f.stack_h2.first()) {
            let ratio = b.rate / a.rate;
            self.tracked(
                &format!(
                    "(b) ÷ (a) calls/s at {} (h2load; the retired target was ≥ 0.85 ×)",
                    f.high
                ),
                format!("{ratio:.2} ×"),
            );
        }
        let added = b_low.ms(0.99) - a_low.ms(0.99);
        self.target(
            &format!("(b) p99 added ≤ 0.3 ms at {} (tonic client)", f.low),
            format!("{added:+.3} ms"),
            added <= 0.3,
        );
        if let (Some(a), Some(b)) = (f.echo_h2.get(1), f.stack_h2.get(1)) {
            let added = b.ms(0.99) - a.ms(0.99);
            self.target(
                &format!("(b) p99 added ≤ 0.3 ms at {} (h2load)", f.low),
                format!("{added:+.3} ms"),
                added <= 0.3,
            );
        }
        let added = f.stack_callers.ms(0.99) - f.echo_callers.ms(0.99);
        self.target(
            &format!(
                "(b) p99 added ≤ 0.3 ms at {} paced callers, {:.0} calls/s (context: below saturation; both tails are this VM's scheduling)",
                f.low,
                f.echo_callers.rate()
            ),
            format!(
                "{added:+.3} ms (p50 {:+.3} ms)",
                f.stack_callers.ms(0.5) - f.echo_callers.ms(0.5)
            ),
            added <= 0.3,
        );
        let added = f.stack_paced.ms(0.99) - f.echo_paced.ms(0.99);
        self.target(
            "(b) p99 added ≤ 0.3 ms, one call at a time (context: no queueing)",
            format!(
                "{added:+.3} ms (p50 {:+.3} ms)",
                f.stack_paced.ms(0.5) - f.echo_paced.ms(0.5)
            ),
            added <= 0.3,
        );
        let ratio = f.get_stream.rate() / a_high.rate();
        self.target(
            "(c) ≥ 0.6 × (a) calls/s",
            format!("{ratio:.2} ×"),
            ratio >= 0.6,
        );
        self.target(
            "(d) ≥ 2,000 cycles/s, SQLite",
            format!("{:.0} cycles/s", f.cycles.rate()),
            f.cycles.rate() >= 2000.0,
        );
        let (p50, p99) = (
            f.via.ms(0.5) / f.direct.ms(0.5),
            f.via.ms(0.99) / f.direct.ms(0.99),
        );
        self.target(
            "(e) gateway ≤ 1.10 × direct latency, fake answering at once (context: what a gRPC hop costs against a loopback call)",
            format!(
                "p50 {p50:.2} ×, p99 {p99:.2} × (p50 {:+.3} ms)",
                f.via.ms(0.5) - f.direct.ms(0.5)
            ),
            p50 <= 1.10,
        );
        let (p50, p99) = (
            f.via_far.ms(0.5) / f.direct_far.ms(0.5),
            f.via_far.ms(0.99) / f.direct_far.ms(0.99),
        );
        self.target(
            &format!(
                "(e) gateway ≤ 1.10 × direct latency, provider {} ms away",
                f.far.as_millis()
            ),
            format!(
                "p50 {p50:.2} ×, p99 {p99:.2} × (p50 {:+.3} ms)",
                f.via_far.ms(0.5) - f.direct_far.ms(0.5)
            ),
            p50 <= 1.10,
        );
        self.target(
            "(f) exactly ⌈streams per video / 20⌉ DeleteStream calls per video",
            (if f.exact { "exact" } else { "not exact" }).to_string(),
            f.exact,
        );
        let over = f.wall.as_secs_f64() / f.floor;
        self.target(
            "(f) wall time within 10% of the quota floor",
            format!(
                "{:.3} s / {:.3} s = {over:.3}",
                f.wall.as_secs_f64(),
                f.floor
            ),
            (0.9..=1.1).contains(&over),
        );
        self.target(
            "RSS idle ≤ 40 MiB",
            format!("{:.1} MiB", f.idle),
            f.idle <= 40.0,
        );
        self.target(
            "RSS under (b) ≤ 80 MiB",
            format!("{:.1} MiB", f.under_b),
            f.under_b <= 80.0,
        );
        let ms = f.startup.as_secs_f64() * 1e3;
        self.target(
            "start-up to SERVING ≤ 200 ms (slowest start)",
            format!("{ms:.1} ms"),
            ms <= 200.0,
        );
    }

    pub fn print(&self) {
        if !self.full {
            println!("(smoke run: tiny sizes, unpinned; the figures mean nothing)");
        }
        println!(
            "| scenario | concurrency | calls/s | p50 ms | p99 ms | p99.9 ms | server RSS MiB | server CPU µs/call | note |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.scenario,
                r.concurrency,
                cell(r.rate, 0),
                cell(r.p50, 3),
                cell(r.p99, 3),
                cell(r.p999, 3),
                r.rss.map_or("–".into(), |m| cell(m, 1)),
                r.cpu_us.map_or("–".into(), |c| cell(c, 0)),
                r.note
            );
        }
        println!();
        for line in &self.lines {
            println!("{line}");
        }
        println!();
        println!("| target | measured | met |");
        println!("|---|---|---|");
        for (what, measured, met) in self.targets.iter().chain(&self.watch_targets) {
            let met = match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "tracked, not a target",
            };
            println!("| {what} | {measured} | {met} |");
        }
        println!();
        for note in &self.notes {
            println!("- {note}");
        }
        for section in &self.sections {
            println!();
            println!("{section}");
        }
    }
}
