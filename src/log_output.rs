//! Where log lines go: stderr, written by a thread of its own.
//!
//! At the default `info` level every request logs a line. Written straight to stderr, each line
//! took the stderr lock and a `write` system call on the request's own thread (the line costs
//! about a sixth of a point read's throughput, formatting included; BENCHMARKS.md). Here a line is appended to a buffer in memory
//! under a short lock, and one thread writes the buffer out: as soon as something is in it, so
//! at a low rate a line appears at once, and under load the lines gathered meanwhile go out in
//! one `write`. A request never waits for stderr: the buffer is bounded, and when stderr does
//! not keep up (a pipe nobody reads) the lines beyond it are dropped, counted, and the count is
//! logged once stderr takes lines again. [`LogOutputGuard`] writes what is left when dropped;
//! a process killed outright loses what was not written yet (at most a few milliseconds' worth).

use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The most bytes of log lines held for the writing thread; lines beyond it are dropped.
const MAX_BUFFERED: usize = 4 << 20;

/// How long the writing thread lets lines gather after each write: at most a thousand writes a
/// second however busy the service is, and a line waits at most this long plus one write.
const GATHER: Duration = Duration::from_millis(1);

/// The `MakeWriter` of the log: hands each formatted line to the writing thread.
#[derive(Clone)]
pub struct LogOutput {
    shared: Arc<Shared>,
}

/// Stops the writing thread when dropped, after it has written every line handed to it; lines
/// logged later go straight to stderr.
pub struct LogOutputGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// stderr, but for the tests.
    target: Mutex<Box<dyn std::io::Write + Send>>,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    dropped: u64,
    /// Set by the guard: the thread writes what it has and ends; writers write directly.
    closing: bool,
}

impl LogOutput {
    /// Starts the writing thread. Falls back to writing on the caller's thread if it cannot
    /// start.
    pub fn start() -> (LogOutput, LogOutputGuard) {
        LogOutput::start_on(Box::new(std::io::stderr()))
    }

    /// Starts the writing thread over `target` instead of stderr.
    pub fn start_on(target: Box<dyn std::io::Write + Send>) -> (LogOutput, LogOutputGuard) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            target: Mutex::new(target),
        });
        let writing = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || write_out(&writing))
            .ok();
        if thread.is_none() {
            shared.lock().closing = true;
        }
        (
            LogOutput {
                shared: shared.clone(),
            },
            LogOutputGuard { shared, thread },
        )
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only bytes behind: keep using them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_to_target(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut target = self
            .target
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        target.write_all(bytes)?;
        target.flush()
    }
}

impl Drop for LogOutputGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One line on its way to the writing thread (`tracing-subscriber` formats a whole event,
/// then writes it with one `write_all`).
pub struct LineSink<'a> {
    shared: &'a Shared,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogOutput {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> LineSink<'a> {
        LineSink {
            shared: &self.shared,
        }
    }
}

impl std::io::Write for LineSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        if state.closing {
            drop(state);
            return self.shared.write_to_target(bytes).map(|()| bytes.len());
        }
        let was_empty = state.lines.is_empty() && state.dropped == 0;
        if state.lines.len() + bytes.len() > MAX_BUFFERED {
            state.dropped += 1;
        } else {
            state.lines.extend_from_slice(bytes);
        }
        drop(state);
        // Only the first line after a write wakes the thread: one wake per batch, not per line.
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The writing thread: waits for lines, writes all there are in one go, lets more gather.
fn write_out(shared: &Shared) {
    let mut batch = Vec::new();
    loop {
        let (closing, dropped) = {
            let mut state = shared.lock();
            while state.lines.is_empty() && state.dropped == 0 && !state.closing {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            std::mem::swap(&mut state.lines, &mut batch);
            (state.closing, std::mem::take(&mut state.dropped))
        };
        // Nothing to do with a failed write to stderr but to go on.
        let _ = shared.write_to_target(&batch);
        batch.clear();
        if batch.capacity() > 1 << 20 {
            batch.shrink_to(64 << 10);
        }
        if dropped > 0 {
            tracing::warn!(dropped, "log lines dropped: stderr did not keep up");
        }
        if closing {
            return;
        }
        std::thread::sleep(GATHER);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tracing_subscriber::fmt::MakeWriter as _;

    use super::*;

    #[test]
    fn lines_beyond_the_buffer_are_dropped_and_counted_not_waited_for() {
        // No thread: nothing drains the buffer.
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            target: Mutex::new(Box::new(std::io::sink())),
        });
        let output = LogOutput {
            shared: shared.clone(),
        };
        let line = vec![b'x'; 1024];
        for _ in 0..(MAX_BUFFERED / line.len() + 10) {
            output.make_writer().write_all(&line).unwrap();
        }
        let state = shared.lock();
        assert_eq!(state.lines.len(), MAX_BUFFERED);
        assert_eq!(state.dropped, 10);
    }

    /// What the writing thread wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_and_in_order_by_the_time_the_guard_drops() {
        let written = Written::default();
        let (output, guard) = LogOutput::start_on(Box::new(written.clone()));
        for n in 0..1000 {
            output
                .make_writer()
                .write_all(format!("line {n}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        output.make_writer().write_all(b"after\n").unwrap();
        let expected: String = (0..1000).map(|n| format!("line {n}\n")).collect();
        assert_eq!(
            String::from_utf8(written.0.lock().unwrap().clone()).unwrap(),
            expected + "after\n"
        );
    }
}
