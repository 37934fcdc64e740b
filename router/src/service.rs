//! Request/response on routes: [`Router::serve`] and [`Router::request`].
//!
//! A service is registered on the route `Req@path`; one service per route. Each request carries
//! its own reply channel, so concurrent requests are correlated by construction (the network
//! endpoints map these to request ids on the wire).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dndm_core::{Message, Route};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::Router;
use crate::error::{HandlerError, RequestError, ServeError};
use crate::router::Inner;
use crate::snapshot::HandleId;

/// One request on its way to a service, with the channel for its answer.
struct Call<Req, Resp> {
    request: Req,
    reply: oneshot::Sender<Result<Resp, HandlerError>>,
}

struct Entry {
    id: HandleId,
    response_type: String,
    response_type_id: TypeId,
    /// An `mpsc::Sender<Call<Req, Resp>>`.
    calls: Box<dyn Any + Send + Sync>,
    cancel: CancellationToken,
}

/// The table of services, by route.
#[derive(Default)]
pub(crate) struct Services {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    closed: bool,
    entries: HashMap<Route, Entry>,
}

impl Services {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // No code that can panic runs under this lock, so a poisoned table is consistent.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn routes(&self) -> Vec<Route> {
        let mut routes: Vec<Route> = self.lock().entries.keys().cloned().collect();
        routes.sort();
        routes
    }

    /// Stops every service and refuses new ones.
    pub(crate) fn close_all(&self) {
        let entries = {
            let mut table = self.lock();
            table.closed = true;
            std::mem::take(&mut table.entries)
        };
        for entry in entries.into_values() {
            entry.cancel.cancel();
        }
    }

    fn remove(&self, route: &Route, id: HandleId) {
        let mut table = self.lock();
        if table.entries.get(route).is_some_and(|e| e.id == id)
            && let Some(entry) = table.entries.remove(route)
        {
            entry.cancel.cancel();
        }
    }
}

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

    /// Deregisters and stops the service.
    pub fn close(&self) {
        self.router.services.remove(&self.route, self.id);
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
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ServeError::NoRuntime)?;
        let limit = self.inner.settings.max_concurrent_requests;
        let (tx, rx) = mpsc::channel::<Call<Req, Resp>>(limit);
        let cancel = self.inner.cancel.child_token();
        let id = self.inner.next_id();
        {
            let mut table = self.inner.services.lock();
            if table.closed {
                return Err(ServeError::Closed);
            }
            if table.entries.contains_key(&route) {
                return Err(ServeError::AlreadyServed(route));
            }
            table.entries.insert(
                route.clone(),
                Entry {
                    id,
                    response_type: Resp::type_name(),
                    response_type_id: TypeId::of::<Resp>(),
                    calls: Box::new(tx),
                    cancel: cancel.clone(),
                },
            );
        }
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
        let calls = {
            let table = self.inner.services.lock();
            if table.closed {
                return Err(RequestError::Closed);
            }
            let entry = table
                .entries
                .get(&route)
                .ok_or_else(|| RequestError::NoListener(route.clone()))?;
            let mismatch = || RequestError::ResponseType {
                route: route.clone(),
                expected: Resp::type_name(),
                actual: entry.response_type.clone(),
            };
            if entry.response_type_id != TypeId::of::<Resp>() {
                return Err(mismatch());
            }
            entry
                .calls
                .downcast_ref::<mpsc::Sender<Call<Req, Resp>>>()
                .ok_or_else(mismatch)?
                .clone()
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
