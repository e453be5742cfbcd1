//! The apalis [`Backend`] over ledgerflow's queue: it yields the jobs the
//! [`fetcher`](super::fetcher) claimed, and ends its stream when the runtime
//! stops fetching, so apalis drains in-flight work and shuts the worker down.
//!
//! It must not touch the database: claiming, leases and outcomes belong to
//! the fetcher, heartbeat and outcome modules.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use apalis_core::backend::{Backend, BackendConfig, finalize::Ephemeral};
use apalis_core::task::{Task, task_id::RandomId};
use apalis_core::worker::context::WorkerContext;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_layer::Identity;

use super::fetcher::ClaimedJob;

/// Jobs claimed for one queue, as an apalis task source.
pub struct QueueBackend {
    jobs: Arc<Mutex<mpsc::Receiver<ClaimedJob>>>,
    stopping: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl QueueBackend {
    pub fn new(jobs: Arc<Mutex<mpsc::Receiver<ClaimedJob>>>, stop: CancellationToken) -> Self {
        QueueBackend {
            jobs,
            stopping: Box::pin(stop.cancelled_owned()),
        }
    }
}

/// The backend itself cannot fail: claim errors are retried by the fetcher.
#[derive(Debug, thiserror::Error)]
#[error("queue backend: {0}")]
pub struct BackendError(String);

impl Backend for QueueBackend {
    type Task = Task<ClaimedJob>;
    type Error = BackendError;

    fn poll_ready(
        &mut self,
        _cx: &mut Context<'_>,
        _w: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _w: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        // Stopping wins over buffered jobs: those stay claimed-but-unstarted
        // and the runtime releases them for other processes at once.
        if self.stopping.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        let mut rx = match self.jobs.lock() {
            Ok(rx) => rx,
            Err(_) => return Poll::Ready(Some(Err(BackendError("job channel poisoned".into())))),
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(job)) => Poll::Ready(Some(Ok(Task::new(job)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_close(
        &mut self,
        _cx: &mut Context<'_>,
        _w: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for QueueBackend {
    type Args = ClaimedJob;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        Identity::new()
    }
}
