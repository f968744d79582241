//! The clinic policy document (`examples/policies/clinic.toml`) and the helpers the
//! `policy_one_document*` integration tests use to edit it and read its errors.
//!
//! Included with `#[path = "common/clinic_policy.rs"] mod clinic_policy;` by each of those test
//! binaries (not part of `common`: it needs the `toml` feature those tests are written for).

use tollgate::policy::{DocumentError, Policy};

pub const CLINIC: &str = include_str!("../../examples/policies/clinic.toml");

pub fn clinic() -> Policy {
    Policy::from_toml(CLINIC).unwrap_or_else(|e| panic!("clinic policy: {e}"))
}

/// The clinic text with `from` replaced by `to` (which must occur exactly once).
pub fn edited(from: &str, to: &str) -> String {
    assert_eq!(CLINIC.matches(from).count(), 1, "`{from}` must occur once");
    CLINIC.replacen(from, to, 1)
}

/// The 1-based line of the first occurrence of `needle` in `text`.
pub fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not found"));
    text[..at].matches('\n').count() + 1
}

pub fn err_of(text: &str) -> DocumentError {
    match Policy::from_toml(text) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    }
}
