//! Async sinks (network backends: a SIEM, an object store, a log service) behind the guard's sync
//! [`AuditSink`] seam.
//!
//! The guard records synchronously; an [`AsyncAuditSink`] writes asynchronously. [`AsyncBridge`]
//! joins them: its sync side serialises each event (redacted) into a bounded queue, and a
//! [`BridgeWorker`] future, spawned on whatever executor the application runs (tokio, async-std,
//! smol, or a dedicated thread with [`BridgeWorker::run_blocking`]), hands the events to the async
//! sink in order.
//!
//! Nothing is lost silently:
//! - the queue is bounded; when full, [`Backpressure::Block`] (default) waits for room and
//!   [`Backpressure::Fail`] refuses the event, so the guard denies the call;
//! - with [`Ack::Delivered`] a `record` returns only once the async sink has taken the event;
//!   with [`Ack::Queued`] (default) it returns once queued, and a later failure of the async sink
//!   is **sticky**: every later `record` and `flush` returns the error (fail closed);
//! - [`AuditSink::flush`] returns once every event recorded before it was delivered and the
//!   async sink's own `flush` succeeded;
//! - if the worker future is dropped (its executor shut down), the bridge refuses every later
//!   event instead of queueing it for nobody.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use tollgate::audit::bridge::{AsyncAuditSink, AsyncBridge, BridgeConfig};
//! use tollgate::audit::{AuditError, AuditEvent, AuditSink, EventKind};
//! use std::time::{Duration, SystemTime};
//!
//! /// Stands in for an HTTP client posting JSON lines to a collector.
//! #[derive(Default)]
//! struct Collector(Mutex<Vec<String>>);
//!
//! #[async_trait::async_trait]
//! impl AsyncAuditSink for Collector {
//!     async fn record(&self, event_json: &[u8]) -> Result<(), AuditError> {
//!         self.0.lock().unwrap().push(String::from_utf8_lossy(event_json).into_owned());
//!         Ok(())
//!     }
//!     async fn flush(&self) -> Result<(), AuditError> { Ok(()) }
//! }
//!
//! let collector = Arc::new(Collector::default());
//! let (bridge, worker) = AsyncBridge::new(collector.clone(), BridgeConfig::default());
//! let thread = std::thread::spawn(move || worker.run_blocking()); // or tokio::spawn(worker.run())
//! let event = AuditEvent::new(1, SystemTime::now(), None, None,
//!     EventKind::RunFinished { duration: Duration::from_secs(3) });
//! bridge.record(&event)?;
//! bridge.flush()?;
//! assert!(collector.0.lock().unwrap()[0].contains("\"event\":\"run_finished\""));
//! drop(bridge);
//! thread.join().unwrap();
//! # Ok::<(), AuditError>(())
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::file::{Backpressure, MAX_EVENT_BYTES};
use super::{AuditError, AuditEvent, AuditSink, Redaction};

const SINK_NAME: &str = "async-bridge";

/// A sink whose writes are asynchronous. It receives each event already serialised (one compact
/// JSON object, see [`AuditEvent::write_json`]) and already redacted.
#[async_trait::async_trait]
pub trait AsyncAuditSink: Send + Sync + 'static {
    /// Takes one event. An error is reported by every later `record` and `flush` of the bridge.
    async fn record(&self, event_json: &[u8]) -> Result<(), AuditError>;
    /// Returns once everything taken so far is durable at the destination.
    async fn flush(&self) -> Result<(), AuditError>;
}

/// When the bridge's `record` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Ack {
    /// Once the event is queued (default). A later delivery failure is sticky.
    #[default]
    Queued,
    /// Once the async sink has taken the event (its `record` returned `Ok`).
    Delivered,
}

/// Configures an [`AsyncBridge`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BridgeConfig {
    /// Events queued at most (default 1024, at least 1).
    pub capacity: usize,
    /// What a full queue does (default: block).
    pub backpressure: Backpressure,
    /// When `record` returns (default: once queued).
    pub ack: Ack,
    /// How sensitive arguments are written (default: placeholder).
    pub redaction: Redaction,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            backpressure: Backpressure::Block,
            ack: Ack::Queued,
            redaction: Redaction::placeholder(),
        }
    }
}

impl BridgeConfig {
    /// Sets the queue capacity.
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n.max(1);
        self
    }
    /// Sets the backpressure.
    pub fn backpressure(mut self, b: Backpressure) -> Self {
        self.backpressure = b;
        self
    }
    /// Sets when `record` returns.
    pub fn ack(mut self, ack: Ack) -> Self {
        self.ack = ack;
        self
    }
    /// Sets the redaction of sensitive arguments.
    pub fn redaction(mut self, r: Redaction) -> Self {
        self.redaction = r;
        self
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Vec<u8>>,
    /// Events accepted so far (the ticket of the last one).
    accepted: u64,
    /// Events the async sink has taken.
    delivered: u64,
    /// Highest ticket a `flush` waits for; `flushed` is the highest confirmed.
    flush_requested: u64,
    flushed: u64,
    failed: Option<String>,
    closed: bool,
    worker_gone: bool,
    waker: Option<Waker>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when room appears, an event is delivered, a flush completes or the worker fails.
    progress: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation keeps the state consistent at each step, so a lock whose holder
        // panicked still guards the truth.
        self.state.lock()
    }

    fn wait<'a>(&self, mut g: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.progress.wait(&mut g);
        g
    }
}

fn refused(reason: String) -> AuditError {
    AuditError::Refused {
        sink: SINK_NAME,
        reason,
    }
}

fn check_alive(st: &State) -> Result<(), AuditError> {
    if let Some(f) = &st.failed {
        return Err(refused(format!("the async sink failed earlier: {f}")));
    }
    if st.worker_gone {
        return Err(refused(
            "the bridge worker is not running (its future was dropped)".into(),
        ));
    }
    Ok(())
}

/// The sync side: an [`AuditSink`] feeding an [`AsyncAuditSink`] through a bounded queue.
pub struct AsyncBridge {
    shared: Arc<Shared>,
    config: BridgeConfig,
}

impl std::fmt::Debug for AsyncBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncBridge")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The async side: drives the [`AsyncAuditSink`]. Spawn [`run`](Self::run) on an executor or call
/// [`run_blocking`](Self::run_blocking) on a thread of its own; it ends when the bridge is dropped
/// and the queue is drained.
pub struct BridgeWorker {
    shared: Arc<Shared>,
    sink: Arc<dyn AsyncAuditSink>,
}

impl std::fmt::Debug for BridgeWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BridgeWorker")
    }
}

impl AsyncBridge {
    /// A bridge to `sink` and the worker that must run for events to flow.
    pub fn new(sink: Arc<dyn AsyncAuditSink>, config: BridgeConfig) -> (Self, BridgeWorker) {
        let config = BridgeConfig {
            capacity: config.capacity.max(1),
            ..config
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            progress: Condvar::new(),
        });
        (
            Self {
                shared: shared.clone(),
                config,
            },
            BridgeWorker { shared, sink },
        )
    }
}

impl AuditSink for AsyncBridge {
    fn record(&self, event: &AuditEvent<'_>) -> Result<(), AuditError> {
        let mut bytes = Vec::with_capacity(256);
        event.write_json(&mut bytes, &self.config.redaction);
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(refused(format!(
                "the event is {} bytes, more than the {MAX_EVENT_BYTES} allowed",
                bytes.len()
            )));
        }
        let shared = &*self.shared;
        let mut st = shared.lock();
        loop {
            check_alive(&st)?;
            if st.queue.len() < self.config.capacity {
                break;
            }
            match self.config.backpressure {
                Backpressure::Fail => {
                    return Err(refused(format!(
                        "the queue is full ({} events waiting)",
                        self.config.capacity
                    )));
                }
                _ => st = shared.wait(st),
            }
        }
        st.queue.push_back(bytes);
        st.accepted += 1;
        let ticket = st.accepted;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
        if self.config.ack == Ack::Delivered {
            while st.delivered < ticket {
                check_alive(&st)?;
                st = shared.wait(st);
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), AuditError> {
        let shared = &*self.shared;
        let mut st = shared.lock();
        check_alive(&st)?;
        let target = st.accepted;
        st.flush_requested = st.flush_requested.max(target);
        if let Some(w) = st.waker.take() {
            w.wake();
        }
        while st.flushed < target {
            check_alive(&st)?;
            st = shared.wait(st);
        }
        check_alive(&st)
    }
}

impl Drop for AsyncBridge {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.closed = true;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }
}

/// However the worker ends (finished, failed, or its future dropped unfinished), nothing more will
/// be delivered: say so, so that no caller waits or queues for nobody.
impl Drop for BridgeWorker {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.worker_gone = true;
        drop(st);
        self.shared.progress.notify_all();
    }
}

enum Work {
    Event(Vec<u8>),
    Flush(u64),
    Done,
}

impl BridgeWorker {
    /// Delivers events until the bridge is dropped and the queue drained, or the async sink
    /// fails (then every later `record` and `flush` of the bridge reports the failure).
    pub async fn run(self) {
        loop {
            let work = std::future::poll_fn(|cx| self.next(cx)).await;
            let result = match work {
                Work::Event(bytes) => self.sink.record(&bytes).await.map(|()| None),
                Work::Flush(target) => self.sink.flush().await.map(|()| Some(target)),
                Work::Done => break,
            };
            let mut st = self.shared.lock();
            match result {
                Ok(None) => st.delivered += 1,
                Ok(Some(target)) => st.flushed = st.flushed.max(target),
                Err(e) => {
                    st.failed = Some(e.to_string());
                    drop(st);
                    self.shared.progress.notify_all();
                    break;
                }
            }
            drop(st);
            self.shared.progress.notify_all();
        }
    }

    fn next(&self, cx: &mut Context<'_>) -> Poll<Work> {
        let mut st = self.shared.lock();
        if let Some(bytes) = st.queue.pop_front() {
            drop(st);
            self.shared.progress.notify_all();
            return Poll::Ready(Work::Event(bytes));
        }
        if st.flush_requested > st.flushed {
            return Poll::Ready(Work::Flush(st.flush_requested));
        }
        if st.closed {
            return Poll::Ready(Work::Done);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Runs the worker on the current thread (for sinks that need no particular runtime).
    pub fn run_blocking(self) {
        block_on(self.run());
    }
}

/// Polls `f` to completion on this thread, parking between wake-ups.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = Pin::as_mut(&mut f).poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
