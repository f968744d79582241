//! [`GuardLayer`]: wraps services in a [`GuardService`].

use tower::Layer;

use super::service::GuardService;
use crate::guard::Guard;

/// Wraps a tool-call service so that every request is checked by the guard first.
#[derive(Clone, Debug)]
pub struct GuardLayer {
    guard: Guard,
}

impl GuardLayer {
    /// A layer that checks requests with `guard` (cheap to clone: one `Arc`).
    pub fn new(guard: Guard) -> Self {
        Self { guard }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService::new(self.guard.clone(), inner)
    }
}
