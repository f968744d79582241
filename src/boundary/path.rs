//! STUB
#![allow(missing_docs, dead_code, unused_variables)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DotDot { #[default] Reject, Normalize }
#[derive(Debug, Clone)]
pub struct PathRoot { s: String }
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathRootError { #[error("x")] X }
impl PathRoot {
    pub fn parse(root: &str) -> Result<Self, PathRootError> { todo!() }
    pub fn as_str(&self) -> &str { todo!() }
}
#[derive(Debug, Clone)]
pub struct PathPolicy { pub root: PathRoot, pub dot_dot: DotDot, pub allow_relative: bool, pub max_len: usize }
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathViolation { #[error("x")] X }
pub fn check_path(input: &str, policy: &PathPolicy, compartment: Option<&str>) -> Result<(), PathViolation> { todo!() }
