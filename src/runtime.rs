//! The tokio runtime the binary runs on, and the benchmark's baseline server with it, so that
//! both are measured on the same scheduler.
//!
//! One worker thread per core this process may use (`std::thread::available_parallelism`,
//! which honours the CPU affinity mask and, on Linux, the cgroup CPU quota), or
//! `[server] worker_threads`. With one worker it is tokio's current-thread scheduler, not a
//! multi-thread runtime of one worker, because of how the multi-thread scheduler's LIFO slot
//! meets hyper's HTTP/2 server:
//!
//! - hyper runs each HTTP/2 stream (each call) as a task of its own, and the connection's task
//!   writes the frames the streams leave in its queue.
//! - When a call's task has answered, it wakes the connection's task. The multi-thread
//!   scheduler puts a task woken by the running one in its LIFO slot, ahead of the calls that
//!   are already queued. So the connection's task runs next and writes that one answer: one
//!   `writev` and one more turn of the connection per call.
//! - The current-thread scheduler queues the connection's task behind the calls that arrived
//!   in the same read, and it writes their answers together.
//!
//! Measured pinned to one core, 64 calls in flight over 4 connections (docs/PERFORMANCE.md):
//! 0.98 → 0.09 `writev` per call, and about twice the calls per second, for the gateway and
//! for a bare tonic server alike.
//!
//! With several workers it is the multi-thread scheduler with the LIFO slot turned off
//! (`Builder::disable_lifo_slot`), which gives the same order: two workers on two cores, sharing
//! them with h2load, served 21,000–24,000 GetProvider calls/s at 0.78 `writev` a call with the
//! slot, 33,000–41,500 at 0.11 without it (one worker: 26,000–28,000). That API is unstable
//! tokio: `.cargo/config.toml` builds everything with `--cfg tokio_unstable`, and a build
//! without it (a RUSTFLAGS variable replaces that list) keeps the slot, which the test
//! `several_workers_run_tasks_first_in_first_out` reports.

use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

/// How many workers `configured` means: itself, or when 0 one per core this process may use.
pub fn workers(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// A runtime of [`workers`]`(configured)` workers, with I/O and timers; the current-thread
/// scheduler when that is one.
pub fn build(configured: usize) -> std::io::Result<Runtime> {
    let workers = workers(configured);
    let mut builder = if workers == 1 {
        Builder::new_current_thread()
    } else {
        let mut builder = Builder::new_multi_thread();
        builder.worker_threads(workers);
        #[cfg(tokio_unstable)]
        builder.disable_lifo_slot();
        builder
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::*;

    #[test]
    fn one_worker_is_the_current_thread_scheduler() {
        let runtime = build(1).unwrap();
        assert_eq!(
            runtime.handle().runtime_flavor(),
            RuntimeFlavor::CurrentThread
        );
        // I/O and timers are on.
        runtime.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        });
    }

    #[test]
    fn several_workers_are_a_multi_thread_runtime_of_that_many() {
        let runtime = build(3).unwrap();
        assert_eq!(
            runtime.handle().runtime_flavor(),
            RuntimeFlavor::MultiThread
        );
        assert_eq!(runtime.metrics().num_workers(), 3);
    }

    /// The tasks a task spawns run in the order they were spawned: the last one does not jump
    /// ahead through the LIFO slot (which is what made the connection's task run after every
    /// answer). One worker spins so that it cannot steal; the other runs the spawner.
    #[test]
    fn several_workers_run_tasks_first_in_first_out() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        use std::time::{Duration, Instant};

        let runtime = build(2).unwrap();
        let spinning = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let order = Arc::new(Mutex::new(Vec::new()));
        let spinner = {
            let (spinning, done) = (Arc::clone(&spinning), Arc::clone(&done));
            runtime.spawn(async move {
                spinning.store(true, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(10);
                while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
            })
        };
        while !spinning.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let spawner = {
            let order = Arc::clone(&order);
            runtime.spawn(async move {
                (1..=3)
                    .map(|i| {
                        let order = Arc::clone(&order);
                        tokio::spawn(async move { order.lock().unwrap().push(i) })
                    })
                    .collect::<Vec<_>>()
            })
        };
        let children = runtime.block_on(spawner).unwrap();
        for child in children {
            runtime.block_on(child).unwrap();
        }
        done.store(true, Ordering::SeqCst);
        runtime.block_on(spinner).unwrap();
        assert_eq!(*order.lock().unwrap(), [1, 2, 3]);
    }

    #[test]
    fn zero_means_one_worker_per_available_core() {
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(workers(0), cores);
        assert_eq!(workers(5), 5);
        let runtime = build(0).unwrap();
        let expected = if cores == 1 {
            RuntimeFlavor::CurrentThread
        } else {
            RuntimeFlavor::MultiThread
        };
        assert_eq!(runtime.handle().runtime_flavor(), expected);
    }
}
