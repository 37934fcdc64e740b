//! Errors of router operations, one enum per operation.

use std::sync::Arc;

use dndm_core::{Route, RouteParseError};

/// Why [`Router::publish`](crate::Router::publish) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The path does not make a valid route with the message type name.
    #[error("invalid route: {0}")]
    Route(#[from] RouteParseError),
    /// The history size is out of range ([`PublishOptions::history`](crate::PublishOptions)).
    #[error("history of {value} messages is invalid: must be at most {max}")]
    History {
        /// The requested number of messages.
        value: usize,
        /// The largest accepted number.
        max: usize,
    },
    /// The history's byte bound is 0 (`PublishOptions::history_bytes`).
    #[error("history bound of {value} bytes is invalid: must be at least 1")]
    HistoryBytes {
        /// The requested bound.
        value: usize,
    },
    /// The history's age limit is zero (`PublishOptions::history_age`).
    #[error("history age of {value:?} is invalid: must be more than zero")]
    HistoryAge {
        /// The requested age.
        value: std::time::Duration,
    },
    /// The router is closed.
    #[error("router is closed")]
    Closed,
}

/// Why [`Router::subscribe`](crate::Router::subscribe) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The pattern does not make a valid route pattern with the message type name.
    #[error("invalid route pattern: {0}")]
    Pattern(#[from] RouteParseError),
    /// The queue capacity is out of range.
    #[error("queue capacity {value} is invalid: must be between 1 and {max}")]
    Capacity {
        /// The requested capacity.
        value: usize,
        /// The largest accepted capacity.
        max: usize,
    },
    /// The history asked for is out of range (`SubscribeOptions::history`).
    #[error("history of {value} messages is invalid: must be at most {max}")]
    History {
        /// The requested number of messages.
        value: usize,
        /// The largest accepted number.
        max: usize,
    },
    /// A hashed interest names one exact route; this pattern has wildcards.
    #[error("a hashed interest needs one exact route, {pattern} has wildcards")]
    HashedPattern {
        /// The pattern.
        pattern: String,
    },
    /// The router is closed.
    #[error("router is closed")]
    Closed,
}

/// What went wrong in [`Intent::send`](crate::Intent::send).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// The intent or the router is closed.
    Closed,
    /// A `Block` subscriber stayed full past the send timeout; `undelivered` subscribers did
    /// not get the message (every other linked subscriber did).
    Timeout {
        /// How many subscribers did not get the message.
        undelivered: usize,
    },
    /// A `Block` subscriber was full and the call was `try_send` (which never waits).
    Full {
        /// How many subscribers did not get the message.
        undelivered: usize,
    },
    /// Nobody subscribes: `try_send` says so instead of dropping the message silently.
    NoSubscribers,
}

/// A failed send; hands the message back.
#[derive(Clone, thiserror::Error)]
#[error("{}", match .kind {
    SendErrorKind::Closed => "send on a closed intent".to_owned(),
    SendErrorKind::Timeout { undelivered } =>
        format!("send timed out: {undelivered} blocking subscriber(s) stayed full"),
    SendErrorKind::Full { undelivered } =>
        format!("send would block: {undelivered} blocking subscriber(s) are full"),
    SendErrorKind::NoSubscribers => "no subscriber: the message was not sent".to_owned(),
})]
pub struct SendError<T> {
    kind: SendErrorKind,
    message: Arc<T>,
}

impl<T> SendError<T> {
    pub(crate) fn new(kind: SendErrorKind, message: Arc<T>) -> Self {
        Self { kind, message }
    }

    /// What went wrong.
    pub fn kind(&self) -> SendErrorKind {
        self.kind
    }

    /// The message that was not (fully) delivered.
    pub fn into_message(self) -> Arc<T> {
        self.message
    }

    /// Whether trying again later may succeed (a full subscriber may drain, a subscriber may
    /// come).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            SendErrorKind::Timeout { .. }
                | SendErrorKind::Full { .. }
                | SendErrorKind::NoSubscribers
        )
    }
}

impl<T> std::fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Why [`Interest::recv`](crate::Interest::recv) returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The interest or the router is closed and the queue is drained.
    #[error("receive on a closed interest")]
    Closed,
}

/// Why [`Interest::try_recv`](crate::Interest::try_recv) returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No message is queued right now.
    #[error("no message queued")]
    Empty,
    /// The interest or the router is closed and the queue is drained.
    #[error("receive on a closed interest")]
    Closed,
}

impl TryRecvError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Empty)
    }
}

/// Why [`Interest::recv_timeout`](crate::Interest::recv_timeout) returned no message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// No message arrived within the timeout.
    #[error("no message within {0:?}")]
    Timeout(std::time::Duration),
    /// The interest or the router is closed and the queue is drained.
    #[error("receive on a closed interest")]
    Closed,
}

impl RecvTimeoutError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

/// Why waiting for a subscriber ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// No subscriber linked within the timeout.
    #[error("no subscriber within {0:?}")]
    Timeout(std::time::Duration),
    /// The intent or the router is closed.
    #[error("intent is closed")]
    Closed,
}

impl WaitError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

/// Why [`Router::serve`](crate::Router::serve) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The path does not make a valid route with the request type name.
    #[error("invalid route: {0}")]
    Route(#[from] RouteParseError),
    /// Another service already serves this route.
    #[error("route {0} is already served")]
    AlreadyServed(Route),
    /// `serve` was called outside a tokio runtime.
    #[error("serve needs a tokio runtime to run the service task")]
    NoRuntime,
    /// The router is closed.
    #[error("router is closed")]
    Closed,
}

/// Why [`Router::request`](crate::Router::request) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The path does not make a valid route with the request type name.
    #[error("invalid route: {0}")]
    Route(#[from] RouteParseError),
    /// No service listens on the route.
    #[error("no listener on {0}")]
    NoListener(Route),
    /// The service on the route answers with another response type.
    #[error("service on {route} answers {actual}, not {expected}")]
    ResponseType {
        /// The request route.
        route: Route,
        /// The response type the caller asked for.
        expected: String,
        /// The response type the service produces.
        actual: String,
    },
    /// No response within the timeout.
    #[error("no response from {route} within {timeout:?}")]
    Timeout {
        /// The request route.
        route: Route,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// The handler returned an error.
    #[error("handler on {route} failed: {message}")]
    Handler {
        /// The request route.
        route: Route,
        /// The handler's error message.
        message: String,
    },
    /// The service stopped before answering.
    #[error("service on {0} closed before answering")]
    ServiceClosed(Route),
    /// The serving peer (or the link to it) has too many requests in flight; nothing was
    /// handled, and a retry later may succeed.
    #[error("service on {route} is busy: {reason}")]
    Busy {
        /// The request route.
        route: Route,
        /// Which budget was full.
        reason: String,
    },
    /// The serving peer's ACL does not let this node call the service.
    #[error("calling {route} is denied: {reason}")]
    Denied {
        /// The request route.
        route: Route,
        /// The serving peer's explanation.
        reason: String,
    },
    /// The router is closed.
    #[error("router is closed")]
    Closed,
}

impl RequestError {
    /// Whether trying again later may succeed (no listener yet, timeout, service restarting).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::NoListener(_) | Self::Timeout { .. } | Self::ServiceClosed(_)
        )
    }
}

/// An error a request handler returns; the caller sees it as [`RequestError::Handler`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl HandlerError {
    /// A handler error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Why [`RouterBuilder::build`](crate::RouterBuilder::build) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is out of range.
    #[error("router setting {field} = {value} is invalid: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: String,
        /// The rule it breaks.
        reason: &'static str,
    },
}
