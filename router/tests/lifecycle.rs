//! Lifecycle: close ends every task, wakes every waiter, and every handle reports closed.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use dndm_router::{
    HandlerError, PublishError, RequestError, Router, SendErrorKind, SubscribeError, WaitError,
};
use support::{Answer, Ask, GUARD, Reading};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_leaves_no_task_and_every_handle_closed() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let router = Router::builder().build().unwrap();
    let intent = router.publish::<Reading>("l").unwrap();
    let mut sub = router.subscribe::<Reading>("l").unwrap();
    // A service with requests in flight: its task and the handler tasks are the router's.
    let (entered_tx, mut entered_rx) = tokio::sync::mpsc::channel::<()>(8);
    let _service = router
        .serve::<Ask, Answer, _, _>("svc", move |ask| {
            let entered = entered_tx.clone();
            async move {
                let _ = entered.send(()).await;
                std::future::pending::<()>().await;
                Ok::<_, HandlerError>(Answer { n: ask.n })
            }
        })
        .unwrap();
    let caller = {
        let router = router.clone();
        tokio::spawn(async move {
            router
                .request::<Ask, Answer>("svc", Ask { n: 1 }, Duration::from_secs(3600))
                .await
        })
    };
    tokio::time::timeout(GUARD, entered_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        metrics.num_alive_tasks() >= baseline + 3,
        "service, handler and caller are running"
    );

    assert!(
        router.snapshot().tasks >= 2,
        "service and handler are tracked"
    );
    tokio::time::timeout(GUARD, router.close())
        .await
        .expect("close returns");
    // close() returned only after every task it spawned ended (the tracker is empty now, not
    // eventually).
    assert_eq!(router.snapshot().tasks, 0);
    // The caller is ours, not the router's: it ends because its request failed.
    let outcome = tokio::time::timeout(GUARD, caller).await.unwrap().unwrap();
    assert_eq!(
        outcome.unwrap_err(),
        RequestError::ServiceClosed("test.Ask@svc".parse().unwrap())
    );
    // A finished task leaves the runtime's list just after its JoinHandle is woken; wait for
    // that event (guarded), never for a duration.
    tokio::time::timeout(GUARD, async {
        while metrics.num_alive_tasks() > baseline {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("no task the router spawned is left");
    assert_eq!(metrics.num_alive_tasks(), baseline);

    assert!(router.is_closed());
    assert!(intent.is_closed());
    assert!(sub.is_closed());
    assert_eq!(
        intent.send(Reading::new(0, 0)).await.unwrap_err().kind(),
        SendErrorKind::Closed
    );
    assert!(sub.recv().await.is_err());
    assert_eq!(
        router.publish::<Reading>("l").unwrap_err(),
        PublishError::Closed
    );
    assert_eq!(
        router.subscribe::<Reading>("l").unwrap_err(),
        SubscribeError::Closed
    );
    assert_eq!(intent.interested().await.unwrap_err(), WaitError::Closed);
    assert!(router.snapshot().closed);
    // Idempotent.
    router.close().await;
}

#[tokio::test(start_paused = true)]
async fn wait_for_interest_times_out_then_succeeds_and_close_wakes_it() {
    let router = Router::builder().build().unwrap();
    let intent = router.publish::<Reading>("i").unwrap();
    let err = intent
        .wait_for_interest(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err, WaitError::Timeout(Duration::from_millis(100)));

    let waiter = {
        let router = router.clone();
        tokio::spawn(async move {
            let intent = router.publish::<Reading>("j").unwrap();
            intent.interested().await
        })
    };
    let _sub = router.subscribe::<Reading>("j").unwrap();
    assert_eq!(
        tokio::time::timeout(GUARD, waiter).await.unwrap().unwrap(),
        Ok(1)
    );

    let lonely = router.publish::<Reading>("k").unwrap();
    let closing = router.clone();
    let (result, ()) = tokio::join!(lonely.interested(), async move { closing.close().await });
    assert_eq!(result, Err(WaitError::Closed));
}

#[tokio::test]
async fn dropping_the_last_router_clone_closes_it() {
    let router = Router::builder().build().unwrap();
    let mut sub = router.subscribe::<Reading>("d").unwrap();
    let clone = router.clone();
    drop(router);
    assert!(!sub.is_closed(), "a clone is still alive");
    drop(clone);
    assert!(sub.is_closed());
    assert!(
        tokio::time::timeout(GUARD, sub.recv())
            .await
            .unwrap()
            .is_err()
    );
}
