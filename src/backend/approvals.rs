//! The `[backend.approvals]` section: how a host follows the shared approval queue in
//! PostgreSQL (see `backend::postgres::approvals`, feature `postgres`).
//!
//! ```toml
//! [backend.approvals]
//! poll = "1s"   # sync at least this often, whether or not a NOTIFY arrived
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::DocumentError;

/// The document's `[backend.approvals]` section (every field has a default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsSection {
    /// The listener syncs the host's queue on every `NOTIFY` and at least this often (the
    /// fallback when a notification is lost; default `"1s"`, 10 ms to 1 h).
    #[serde(with = "crate::units::duration")]
    pub poll: Duration,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
        }
    }
}

impl ApprovalsSection {
    /// Checks what serde cannot, naming the field.
    pub(crate) fn validate(&self) -> Result<(), DocumentError> {
        if self.poll < Duration::from_millis(10) || self.poll > Duration::from_secs(3600) {
            return Err(DocumentError::invalid(
                "backend.approvals.poll",
                "must be between 10ms and 1h",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_out_of_range_is_refused_by_name() {
        ApprovalsSection::default().validate().unwrap();
        let s: ApprovalsSection = serde_json::from_str(r#"{"poll":"1ms"}"#).unwrap();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("backend.approvals.poll"), "{e}");
        assert!(serde_json::from_str::<ApprovalsSection>(r#"{"poll":1}"#).is_err());
    }
}
