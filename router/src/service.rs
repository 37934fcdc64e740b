//! Request/response on routes: [`Router::serve`] and [`Router::request`].
//!
//! A service is registered on the route `Req@path`; one service per route. Each request carries
//! its own reply channel, so concurrent requests are correlated by construction (the network
//! endpoints map these to request ids on the wire).

use std::any::TypeId;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dndm_core::{CallError, CallFuture, Message, RequestSink, Route, ServiceAd};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{HandlerError, RequestError, ServeError};
use crate::id::HandleId;
use crate::router::Router;
use crate::services::{Call, Entry, Target};
use crate::shared::Inner;

/// A registered request handler. Dropping it (or [`Service::close`]) deregisters the route and
/// stops the service; requests being handled are cancelled.
pub struct Service {
    id: HandleId,
    route: Route,
    cancel: CancellationToken,
    router: Arc<Inner>,
}

impl Service {
    /// The route served (`Req@path`).
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Deregisters and stops the service (peers are told).
    pub fn close(&self) {
        if let Some(ad) = self.router.services.remove(&self.route, self.id) {
            self.router
                .advertise(dndm_core::LocalChange::ServiceRemoved(ad));
        }
        self.cancel.cancel();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Serves requests of type `Req` on `path` with `handler`, answering `Resp`.
    ///
    /// Up to the router's `max_concurrent_requests` requests run at once; more wait in the
    /// service's bounded queue. Must be called within a tokio runtime (the service runs as a
    /// task tracked by the router).
    ///
    /// # Errors
    /// [`ServeError::Route`], [`ServeError::AlreadyServed`], [`ServeError::NoRuntime`],
    /// [`ServeError::Closed`].
    pub fn serve<Req, Resp, F, Fut>(&self, path: &str, handler: F) -> Result<Service, ServeError>
    where
        Req: Message,
        Resp: Message,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, HandlerError>> + Send + 'static,
    {
        let route = Route::new(&Req::type_name(), path)?;
        let response_route = Route::new(&Resp::type_name(), path)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ServeError::NoRuntime)?;
        let limit = self.inner.settings.max_concurrent_requests;
        let (tx, rx) = mpsc::channel::<Call<Req, Resp>>(limit);
        let ad = ServiceAd {
            route: route.clone(),
            request_fingerprint: Req::fingerprint(),
            response_route,
            response_fingerprint: Resp::fingerprint(),
        };
        let encoded = encoded_service(tx.clone());
        let cancel = self.inner.cancel.child_token();
        let id = self.inner.next_id();
        self.inner.services.insert(
            route.clone(),
            Entry {
                id,
                response_type: Resp::type_name(),
                response_type_id: TypeId::of::<Resp>(),
                calls: Box::new(tx),
                encoded,
                ad: ad.clone(),
                cancel: cancel.clone(),
            },
        )?;
        self.inner
            .advertise(dndm_core::LocalChange::ServiceAdded(ad));
        let task = run_service(
            rx,
            Arc::new(handler),
            limit,
            cancel.clone(),
            self.inner.tracker.clone(),
        );
        self.inner.tracker.spawn_on(task, &runtime);
        Ok(Service {
            id,
            route,
            cancel,
            router: self.inner.clone(),
        })
    }

    /// Sends `request` to the service on `Req@path` and waits up to `timeout` for its answer.
    ///
    /// # Cancel safety
    /// Cancelling abandons the request; the service may still handle it.
    ///
    /// # Errors
    /// [`RequestError::NoListener`] at once when nothing serves the route;
    /// [`RequestError::Timeout`]; [`RequestError::Handler`] with the handler's error;
    /// [`RequestError::ResponseType`]; [`RequestError::ServiceClosed`]; [`RequestError::Closed`].
    pub async fn request<Req: Message, Resp: Message>(
        &self,
        path: &str,
        request: Req,
        timeout: Duration,
    ) -> Result<Resp, RequestError> {
        let route = Route::new(&Req::type_name(), path)?;
        let calls = match self.inner.services.target::<Req, Resp>(&route)? {
            Target::Local(calls) => calls,
            Target::Peer(sink) => return call_remote(sink, route, request, timeout).await,
        };
        let exchange = async {
            let (reply, answer) = oneshot::channel();
            let closed = || RequestError::ServiceClosed(route.clone());
            calls
                .send(Call { request, reply })
                .await
                .map_err(|_| closed())?;
            match answer.await.map_err(|_| closed())? {
                Ok(response) => Ok(response),
                Err(HandlerError(message)) => Err(RequestError::Handler {
                    route: route.clone(),
                    message,
                }),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::Timeout { route, timeout }),
        }
    }

    /// [`Router::request`] with the router's default request timeout.
    ///
    /// # Cancel safety
    /// As [`Router::request`].
    ///
    /// # Errors
    /// As [`Router::request`].
    pub async fn request_default<Req: Message, Resp: Message>(
        &self,
        path: &str,
        request: Req,
    ) -> Result<Resp, RequestError> {
        let timeout = self.inner.settings.request_timeout;
        self.request(path, request, timeout).await
    }
}

/// Sends a request to a peer's service and decodes its answer.
async fn call_remote<Req: Message, Resp: Message>(
    sink: Arc<dyn RequestSink>,
    route: Route,
    request: Req,
    timeout: Duration,
) -> Result<Resp, RequestError> {
    let payload = Bytes::from(request.encode_to_vec());
    let answer = match tokio::time::timeout(timeout, sink.call(&route, payload)).await {
        Ok(answer) => answer,
        Err(_) => return Err(RequestError::Timeout { route, timeout }),
    };
    match answer {
        Ok(bytes) => Resp::decode(bytes).map_err(|e| RequestError::Handler {
            route,
            message: format!("response does not decode as {}: {e}", Resp::type_name()),
        }),
        Err(CallError::Handler(message)) => Err(RequestError::Handler { route, message }),
        Err(CallError::NoService(_)) => Err(RequestError::NoListener(route)),
        Err(CallError::Busy(reason)) => Err(RequestError::Busy { route, reason }),
        Err(CallError::Denied(reason)) => Err(RequestError::Denied { route, reason }),
        Err(_) => Err(RequestError::ServiceClosed(route)),
    }
}

/// The service as a function of encoded requests (for peers): decodes, queues the call like a
/// local one (same concurrency limit), encodes the answer.
fn encoded_service<Req: Message, Resp: Message>(
    calls: mpsc::Sender<Call<Req, Resp>>,
) -> Arc<dyn Fn(Bytes) -> CallFuture + Send + Sync> {
    Arc::new(move |payload: Bytes| {
        let calls = calls.clone();
        Box::pin(async move {
            let request = Req::decode(payload).map_err(|e| {
                CallError::Handler(format!(
                    "request does not decode as {}: {e}",
                    Req::type_name()
                ))
            })?;
            let (reply, answer) = oneshot::channel();
            calls
                .send(Call { request, reply })
                .await
                .map_err(|_| CallError::Closed)?;
            match answer.await.map_err(|_| CallError::Closed)? {
                Ok(response) => Ok(Bytes::from(response.encode_to_vec())),
                Err(HandlerError(message)) => Err(CallError::Handler(message)),
            }
        })
    })
}

/// The service task: takes calls off the queue and runs each in its own tracked task, at most
/// `limit` at once. Ends when the service or router is cancelled.
async fn run_service<Req, Resp, F, Fut>(
    mut calls: mpsc::Receiver<Call<Req, Resp>>,
    handler: Arc<F>,
    limit: usize,
    cancel: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
) where
    Req: Message,
    Resp: Message,
    F: Fn(Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, HandlerError>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit));
    loop {
        let call = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            call = calls.recv() => match call {
                Some(call) => call,
                None => break,
            },
        };
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let handler = handler.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                result = handler(call.request) => {
                    // The caller may have given up (timeout); nothing to do then.
                    let _ = call.reply.send(result);
                }
            }
        });
    }
    // Dropping `calls` here fails the callers still queued with `ServiceClosed`.
}
