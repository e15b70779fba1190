//! The threads deliveries run on: a runtime of their own, at a lower CPU priority than the
//! HTTP server and the store, so that acknowledging webhooks comes first when cores run out.

use std::future::Future;
use std::time::Duration;

/// How much lower than the process the delivery threads run (in `nice` steps).
///
/// Rule: ten steps lower, capped at 19 (the lowest). Reason: SEKOIA.IO documents no retry of
/// webhook calls, so an acknowledgement that waits for a core can lose an alert upstream,
/// while a delivery that waits is safe in the store. Ten steps gives a delivery thread about a
/// tenth of the weight of an ingest thread when both want a core (so deliveries are slowed,
/// never stopped: a tenth of a core still sends hundreds of messages a second), and the
/// full core whenever ingest is idle. Nice weights apply among the threads of one cgroup, so
/// in a container or a systemd service this only orders the relay's own work. On 2 cores
/// shared with the load generator, it raised accepted/s by 57–74 % (medians of three rounds)
/// with end to end within the noise (docs/benchmarks.md).
pub const DELIVERY_NICE_STEPS: i32 = 10;

/// The nice value for delivery threads given the process's: [`DELIVERY_NICE_STEPS`] higher,
/// never past 19.
pub fn lowered_nice(current: i32) -> i32 {
    current.saturating_add(DELIVERY_NICE_STEPS).min(19)
}

/// The runtime that runs deliveries: the dispatcher, every send task and the HTTP connections
/// they open.
pub struct DeliveryThreads {
    handle: tokio::runtime::Handle,
    /// Taken only by `drop`.
    runtime: Option<tokio::runtime::Runtime>,
}

impl DeliveryThreads {
    pub fn start(threads: usize) -> std::io::Result<DeliveryThreads> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("delivery")
            .on_thread_start(lower_this_threads_priority)
            .enable_all()
            .build()?;
        tracing::info!(threads, "delivery threads started");
        Ok(DeliveryThreads {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(f)
    }
}

impl Drop for DeliveryThreads {
    fn drop(&mut self) {
        // When this returns, no delivery task runs any more: a send still running after its
        // Application is gone would reach whatever listens on the target's port by then. The
        // shutdown runs on a thread of its own because the main runtime, where the Application
        // is dropped, forbids blocking shutdowns; `run_until` has drained the sends, so this
        // only waits for idle connections (bounded anyway).
        if let Some(rt) = self.runtime.take() {
            let stop = std::thread::spawn(move || rt.shutdown_timeout(Duration::from_secs(1)));
            if stop.join().is_err() {
                tracing::warn!("the delivery threads did not stop cleanly");
            }
        }
    }
}

/// Lower the calling thread's priority by [`DELIVERY_NICE_STEPS`]. Linux only: there the nice
/// value belongs to a thread; elsewhere `setpriority` would lower the whole process.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        // -1 is also a valid priority, so errors are told apart by errno.
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if current == -1 && *libc::__errno_location() != 0 {
            return;
        }
        // Raising the nice value needs no privilege; a failure only leaves the priority as is.
        if libc::setpriority(libc::PRIO_PROCESS, tid, lowered_nice(current)) != 0 {
            tracing::debug!("cannot lower the priority of a delivery thread");
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}

/// This thread's nice value (Linux), for tests.
#[cfg(all(test, target_os = "linux"))]
fn this_threads_nice() -> i32 {
    // SAFETY: as above.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_threads_run_ten_steps_lower_and_never_past_19() {
        assert_eq!(lowered_nice(0), 10);
        assert_eq!(lowered_nice(-5), 5);
        assert_eq!(lowered_nice(12), 19);
        assert_eq!(lowered_nice(19), 19);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn tasks_on_the_delivery_threads_run_at_the_lowered_priority() {
        let here = this_threads_nice();
        let threads = DeliveryThreads::start(2).unwrap();
        let caller = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (nice, name) = caller.block_on(async {
            threads
                .spawn(async {
                    (
                        this_threads_nice(),
                        std::thread::current().name().map(str::to_string),
                    )
                })
                .await
                .unwrap()
        });
        assert_eq!(nice, lowered_nice(here));
        assert_eq!(name.as_deref(), Some("delivery"));
        assert_eq!(
            this_threads_nice(),
            here,
            "the caller's own priority is untouched"
        );
    }
}
