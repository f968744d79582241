//! Alerts: the events an operator must act on now (a breaker opening, a budget running out, a
//! loop, a kill-switch action), with the figures that crossed the threshold.
//!
//! Every alert is also an audit event; the alert path exists so that people are told at once.
//! [`AlertSink`] receives them on the thread that caused them, so implementations must not block:
//! [`ChannelAlerts`] hands them to a bounded channel (and counts, never blocks on, a full one),
//! [`TracingAlerts`] emits a `tracing` warning.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertKind {
    /// A circuit breaker opened (from closed or half-open).
    BreakerOpened,
    /// A circuit breaker closed again after its probes succeeded.
    BreakerClosed,
    /// A run used up a budget.
    BudgetExhausted,
    /// The same call was repeated past the loop limit.
    LoopDetected,
    /// A run went far above its task type's baseline call count.
    AnomalyDetected,
    /// A run called a tool its task type has never used.
    UnexpectedTool,
    /// The kill switch suspended something.
    Suspended,
    /// The kill switch resumed something.
    Resumed,
    /// An audit sink's writer failed: every later call is denied until it is reopened; the
    /// detail says how many acknowledged records were lost, if any.
    AuditWriterFailed,
    /// An audit sink could not publish its head to its witness (the log itself is intact).
    AuditWitnessFailed,
    /// A changed policy file was not installed (invalid, unsigned, or a part that cannot change
    /// by reload): the policy in force stays.
    PolicyRejected,
    /// A task type of the policy's `[rollout]` section was demoted to its first stage at once
    /// (a breaker opened, a safety denial, an approver denied an escalation).
    RolloutDemoted,
}

/// One alert, with enough context to act on it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Alert {
    /// What happened.
    pub kind: AlertKind,
    /// The agent concerned, if any.
    pub agent: Option<String>,
    /// The run concerned, if any.
    pub run: Option<String>,
    /// The tool concerned, if any.
    pub tool: Option<String>,
    /// A human sentence with the figures (rates, counts, limits).
    pub detail: String,
}

/// Receives alerts. Called on the thread that caused the alert: do not block.
pub trait AlertSink: Send + Sync {
    /// Takes one alert.
    fn alert(&self, alert: &Alert);
}

/// Sends alerts into a bounded channel; a full channel drops the alert and counts it (the audit
/// trail still has the event).
#[derive(Debug)]
pub struct ChannelAlerts {
    tx: SyncSender<Alert>,
    dropped: AtomicU64,
}

impl ChannelAlerts {
    /// A sink and the receiver an alerting task reads from.
    pub fn new(capacity: usize) -> (Self, Receiver<Alert>) {
        let (tx, rx) = sync_channel(capacity);
        (
            Self {
                tx,
                dropped: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Alerts dropped because the channel was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl AlertSink for ChannelAlerts {
    fn alert(&self, alert: &Alert) {
        match self.tx.try_send(alert.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Emits each alert as a `tracing` warning (target `tollgate::alert`).
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingAlerts;

impl AlertSink for TracingAlerts {
    fn alert(&self, a: &Alert) {
        tracing::warn!(
            target: "tollgate::alert",
            kind = ?a.kind,
            agent = a.agent.as_deref(),
            run = a.run.as_deref(),
            tool = a.tool.as_deref(),
            "{}",
            a.detail
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            kind: AlertKind::LoopDetected,
            agent: Some("a".into()),
            run: None,
            tool: Some("t".into()),
            detail: "x".into(),
        }
    }

    #[test]
    fn channel_never_blocks_and_counts_what_it_drops() {
        let (sink, rx) = ChannelAlerts::new(2);
        for _ in 0..5 {
            sink.alert(&alert());
        }
        assert_eq!(rx.try_iter().count(), 2);
        assert_eq!(sink.dropped(), 3);
        drop(rx);
        sink.alert(&alert());
        assert_eq!(sink.dropped(), 4);
    }
}
