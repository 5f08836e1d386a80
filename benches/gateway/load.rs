//! The load driver: closed-loop workers (each keeps one call in flight, over a shared set of
//! HTTP/2 connections) and a paced single caller, both recording latencies in HdrHistograms.

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// How long a run warms up (not recorded) and then measures.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub warmup: Duration,
    pub measure: Duration,
}

/// What a run measured.
pub struct Load {
    /// Calls that succeeded while measuring.
    pub calls: u64,
    /// Calls that failed while measuring.
    pub errors: u64,
    /// Every call made, warm-up included (what a server's CPU time is divided by).
    pub all_calls: u64,
    /// The measured wall time.
    pub seconds: f64,
    /// Latencies of the measured calls, in nanoseconds.
    pub latency: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 ns to 60 s at 3 significant figures.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

impl Load {
    fn empty() -> Self {
        Load {
            calls: 0,
            errors: 0,
            all_calls: 0,
            seconds: 0.0,
            latency: histogram(),
        }
    }

    fn record(&mut self, ok: bool, took: Duration) {
        if ok {
            self.calls += 1;
        } else {
            self.errors += 1;
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(nanos.max(1));
    }

    fn merge(&mut self, other: &Load) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.all_calls += other.all_calls;
        self.latency
            .add(&other.latency)
            .expect("histograms of the same bounds");
    }

    /// Successful calls per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.calls as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The latency at `quantile` (0..1), in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1e6
    }
}

/// Runs `concurrency` workers, worker `i` calling through `clients[i % clients.len()]`, each
/// with one call in flight at a time, for the warm-up and then the measured time.
/// `call(client, worker, sequence)` answers whether the call succeeded.
pub async fn closed<C, F, Fut>(clients: &[C], concurrency: usize, plan: Plan, call: F) -> Load
where
    C: Clone + Send + 'static,
    F: Fn(C, usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let start = Instant::now();
    let from = start + plan.warmup;
    let end = from + plan.measure;
    let mut workers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let client = clients[worker % clients.len()].clone();
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut load = Load::empty();
            let mut sequence = 0;
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let ok = call(client.clone(), worker, sequence).await;
                sequence += 1;
                load.all_calls += 1;
                if began >= from {
                    load.record(ok, began.elapsed());
                }
            }
            load
        }));
    }
    let mut total = Load::empty();
    for worker in workers {
        total.merge(&worker.await.expect("load worker"));
    }
    total.seconds = plan.measure.as_secs_f64();
    total
}

/// One caller making a call every `every` (waiting for each answer), so that the server is
/// never queued and a rate limit below the pace never delays a call.
pub async fn paced<F, Fut>(every: Duration, plan: Plan, mut call: F) -> Load
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let from = start + plan.warmup;
    let end = from + plan.measure;
    let mut timer = tokio::time::interval(every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut load = Load::empty();
    let mut sequence = 0;
    loop {
        timer.tick().await;
        let began = Instant::now();
        if began >= end {
            break;
        }
        let ok = call(sequence).await;
        sequence += 1;
        load.all_calls += 1;
        if began >= from {
            load.record(ok, began.elapsed());
        }
    }
    load.seconds = plan.measure.as_secs_f64();
    load
}

/// `callers` callers, caller `i` calling through `clients[i % clients.len()]`, each making a call
/// every `every` (waiting for each answer), their paces spread evenly over `every`: at most
/// `callers` calls in flight, at an offered rate of `callers / every` — below what the server
/// can do, the latency of calls that rarely queue, at that concurrency.
pub async fn paced_callers<C, F, Fut>(
    clients: &[C],
    callers: usize,
    every: Duration,
    plan: Plan,
    call: F,
) -> Load
where
    C: Clone + Send + 'static,
    F: Fn(C, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let start = Instant::now();
    let mut workers = Vec::with_capacity(callers);
    for caller in 0..callers {
        let client = clients[caller % clients.len()].clone();
        let call = call.clone();
        let offset = every * caller as u32 / callers as u32;
        workers.push(tokio::spawn(async move {
            tokio::time::sleep_until((start + offset).into()).await;
            let plan = Plan {
                warmup: plan.warmup.saturating_sub(offset),
                measure: plan.measure,
            };
            paced(every, plan, move |n| call(client.clone(), n)).await
        }));
    }
    let mut total = Load::empty();
    for worker in workers {
        total.merge(&worker.await.expect("paced caller"));
    }
    total.seconds = plan.measure.as_secs_f64();
    total
}
