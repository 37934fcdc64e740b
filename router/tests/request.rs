//! Request/response in process.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use dndm_router::{HandlerError, RequestError, Router, ServeError};
use support::{Answer, Ask, GUARD, Reading};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_correlated() {
    let router = Router::builder().build().unwrap();
    let _service = router
        .serve::<Ask, Answer, _, _>("double", |ask| async move {
            // Answer out of order: later requests with small n overtake.
            for _ in 0..(ask.n % 7) {
                tokio::task::yield_now().await;
            }
            Ok(Answer { n: ask.n * 2 })
        })
        .unwrap();
    let calls = (0..200).map(|n| {
        let router = router.clone();
        tokio::spawn(async move {
            router
                .request::<Ask, Answer>("double", Ask { n }, GUARD)
                .await
        })
    });
    let answers = futures::future::join_all(calls).await;
    for (n, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap().unwrap().n, n as i64 * 2);
    }
    router.close().await;
}

#[tokio::test(start_paused = true)]
async fn no_listener_fails_fast_and_slow_handler_times_out() {
    let router = Router::builder().build().unwrap();
    let start = tokio::time::Instant::now();
    let err = router
        .request::<Ask, Answer>("nobody", Ask { n: 1 }, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        RequestError::NoListener("test.Ask@nobody".parse().unwrap())
    );
    assert!(err.is_transient());
    assert_eq!(start.elapsed(), Duration::ZERO, "failed without waiting");

    let _slow = router
        .serve::<Ask, Answer, _, _>("slow", |_| async {
            std::future::pending::<()>().await;
            Ok(Answer { n: 0 })
        })
        .unwrap();
    let err = router
        .request::<Ask, Answer>("slow", Ask { n: 1 }, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::Timeout { timeout, .. } if timeout == Duration::from_millis(300)),
        "{err}"
    );
    router.close().await;
}

#[tokio::test]
async fn handler_errors_duplicates_and_deregistration() {
    let router = Router::builder().build().unwrap();
    let service = router
        .serve::<Ask, Answer, _, _>("picky", |ask| async move {
            if ask.n < 0 {
                Err(HandlerError::new(format!("negative input {}", ask.n)))
            } else {
                Ok(Answer { n: ask.n })
            }
        })
        .unwrap();
    let err = router
        .request::<Ask, Answer>("picky", Ask { n: -3 }, GUARD)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "handler on test.Ask@picky failed: negative input -3"
    );

    let dup = router
        .serve::<Ask, Answer, _, _>("picky", |_| async { Ok(Answer { n: 0 }) })
        .unwrap_err();
    assert!(matches!(dup, ServeError::AlreadyServed(_)), "{dup}");

    let err = router
        .request::<Ask, Reading>("picky", Ask { n: 1 }, GUARD)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "service on test.Ask@picky answers test.Answer, not test.Reading"
    );

    assert_eq!(router.snapshot().services.len(), 1);
    drop(service);
    let err = router
        .request::<Ask, Answer>("picky", Ask { n: 1 }, GUARD)
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::NoListener(_)), "{err}");
    assert!(router.snapshot().services.is_empty());
    router.close().await;
}

#[test]
fn serve_outside_a_runtime_is_an_error_not_a_panic() {
    let router = Router::builder().build().unwrap();
    let err = router
        .serve::<Ask, Answer, _, _>("x", |_| async { Ok(Answer { n: 0 }) })
        .unwrap_err();
    assert_eq!(err, ServeError::NoRuntime);
}
