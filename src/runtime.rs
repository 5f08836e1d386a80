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
//! With several workers the LIFO slot stays. Turning it off (`Builder::disable_lifo_slot`)
//! gave the same gain in a trial, but it is an unstable tokio API (`--cfg tokio_unstable`),
//! whose form may change in any release; it is left out of the build on purpose.

use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Runtime};

/// The most worker threads `[server] worker_threads` may ask for.
pub const MAX_WORKERS: usize = 1024;

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
