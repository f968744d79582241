//! STUB
#![allow(missing_docs, dead_code, unused_variables)]
#[derive(Debug, Clone)]
pub struct UrlPolicy { s: String }
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlPolicyError { #[error("x")] X }
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlViolation { #[error("x")] X }
impl UrlPolicy {
    pub fn new<H: AsRef<str>, S: AsRef<str>>(hosts: &[H], schemes: &[S], ports: Option<&[u16]>) -> Result<Self, UrlPolicyError> { todo!() }
}
pub fn check_url(input: &str, policy: &UrlPolicy) -> Result<(), UrlViolation> { todo!() }
