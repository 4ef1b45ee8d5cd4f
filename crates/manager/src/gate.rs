//! The API gate: while holdfastd starts up (phases 1 to 3) and once it
//! shuts down, only reads are served (`List`, `Inspect`, `Logs`,
//! `Events`); every other `holdfast.v1.Containers` call gets UNAVAILABLE
//! naming the phase, so no change races the reconcile. A tower wrapper
//! around the generated server, so new RPCs are gated by default.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;

use crate::manager::Phase;

/// The calls served in every phase.
pub const READS: &[&str] = &["List", "Inspect", "Logs", "Events"];

/// Whether `method` (the last part of the gRPC path) may run in `phase`.
pub fn allowed(phase: Phase, method: &str) -> bool {
    phase == Phase::Ready || READS.contains(&method)
}

/// A service that answers UNAVAILABLE for non-read calls until holdfastd
/// is ready.
#[derive(Debug, Clone)]
pub struct Gate<S> {
    inner: S,
    phase: watch::Receiver<Phase>,
}

impl<S> Gate<S> {
    /// Gates `inner` on `phase`.
    pub fn new(inner: S, phase: watch::Receiver<Phase>) -> Gate<S> {
        Gate { inner, phase }
    }
}

impl<S, B> Service<http::Request<B>> for Gate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let phase = *self.phase.borrow();
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        if allowed(phase, method) {
            return Box::pin(self.inner.call(req));
        }
        let status = tonic::Status::unavailable(format!(
            "holdfastd is {}: {method} is refused until it is ready (reads are served)",
            phase.as_str()
        ));
        Box::pin(async move { Ok(status.into_http()) })
    }
}

impl<S: NamedService> NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_in_every_phase_and_changes_only_when_ready() {
        for phase in [
            Phase::Loading,
            Phase::Reconciling,
            Phase::Restarting,
            Phase::Ready,
            Phase::ShuttingDown,
        ] {
            for read in READS {
                assert!(allowed(phase, read), "{phase:?} {read}");
            }
            for change in ["Create", "Start", "Stop", "Remove", "Kill", "Exec", "Wait"] {
                assert_eq!(
                    allowed(phase, change),
                    phase == Phase::Ready,
                    "{phase:?} {change}"
                );
            }
        }
    }
}
