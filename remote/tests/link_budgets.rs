//! Per-peer budgets and need-to-know adverts on real links: a peer's requests beyond
//! `remote.budget.requests` are answered `Busy` at once (no task, no wait), and a peer whose ACL
//! allows nothing learns none of our route names and cannot call our services.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use dndm_core::BudgetKind;
use dndm_remote::acl::{Acl, AclRule};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm_router::{RequestError, Router};

use support::{Reading, keypair, until};

const GUARD: Duration = Duration::from_secs(120);

/// Router `b` listening on loopback TCP (settings adjusted by `tune`), and router `a` dialing
/// it; both endpoints, once linked.
async fn linked(
    tune: impl FnOnce(&mut RemoteConfig),
) -> (Router, RemoteEndpoint, Router, RemoteEndpoint) {
    let b = Router::builder().name("b").build().unwrap();
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse().unwrap())];
    tune(&mut config);
    let eb = RemoteEndpoint::new(keypair(2), config).unwrap();
    b.attach(Arc::new(eb.clone())).await.unwrap();
    let a = Router::builder()
        .name("a")
        .request_timeout(GUARD)
        .build()
        .unwrap();
    let mut config = RemoteConfig::default();
    config.dial = eb.bound();
    let ea = RemoteEndpoint::new(keypair(1), config).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    until(&ea, "a linked", |e| e.links().iter().any(|l| l.connected)).await;
    until(&eb, "b linked", |e| e.links().iter().any(|l| l.connected)).await;
    (a, ea, b, eb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_budget_are_answered_busy_at_once() {
    const BUDGET: usize = 4;
    const CALLS: usize = 40;
    let (a, ea, b, eb) = linked(|config| config.session.budget.requests = BUDGET).await;
    // A handler that answers only when told: the first BUDGET requests hold every permit.
    let (release, released) = tokio::sync::watch::channel(false);
    let _service = b
        .serve::<Reading, Reading, _, _>("stall", move |r: Reading| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|go| *go).await;
                Ok(Reading { seq: r.seq })
            }
        })
        .unwrap();
    // Declared after the service: once a knows it, a knows the service too (adverts keep
    // their order).
    let _marker = b.publish::<Reading>("marker").unwrap();
    until(&ea, "b's service known", |e| {
        knows(e, "test.Reading@marker")
    })
    .await;

    let calls: Vec<_> = (0..CALLS as u64)
        .map(|seq| {
            let a = a.clone();
            tokio::spawn(async move {
                a.request::<Reading, Reading>("stall", Reading { seq }, GUARD)
                    .await
            })
        })
        .collect();
    // Every call past the budget comes back Busy while the first ones still wait.
    until(&eb, "calls past the budget refused", |e| {
        e.stats().over_budget.get(BudgetKind::Requests) == (CALLS - BUDGET) as u64
    })
    .await;
    release.send_replace(true);
    let mut busy = 0;
    let mut answered = 0;
    for call in calls {
        match tokio::time::timeout(GUARD, call).await.unwrap().unwrap() {
            Ok(_) => answered += 1,
            Err(RequestError::Busy { reason, .. }) => {
                assert!(reason.contains("remote.budget.requests"), "{reason}");
                busy += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((answered, busy), (BUDGET, CALLS - BUDGET));
    assert_eq!(
        eb.stats().link_failures,
        0,
        "a busy answer does not cost the link"
    );
}

/// Whether `endpoint`'s link knows the peer's intent on `route`.
fn knows(endpoint: &RemoteEndpoint, route: &str) -> bool {
    endpoint
        .links()
        .iter()
        .any(|l| l.peer_intents.iter().any(|r| r.as_str() == route))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_learns_only_the_routes_its_acl_lets_it_use() {
    // A may subscribe to `public.**` and nothing else (no publishing, no calls).
    let acl = Acl::deny_all()
        .with_rule(AclRule::any_peer().subscribe("test.Reading@public.**".parse().unwrap()));
    let (a, ea, b, _eb) = linked(|config| config.session.acl = acl).await;
    let _vault = b.publish::<Reading>("vault.keys").unwrap();
    let _watch = b.subscribe::<Reading>("vault.**").unwrap();
    let _service = b
        .serve::<Reading, Reading, _, _>("admin.reboot", |r: Reading| async move { Ok(r) })
        .unwrap();
    // Declared last: once a knows it, every earlier advert of b reached a.
    let _news = b.publish::<Reading>("public.news").unwrap();
    until(&ea, "b's public route known", |e| {
        knows(e, "test.Reading@public.news")
    })
    .await;
    let link = &ea.links()[0];
    let intents: Vec<&str> = link.peer_intents.iter().map(|r| r.as_str()).collect();
    assert_eq!(intents, ["test.Reading@public.news"]);
    assert!(link.peer_interests.is_empty(), "{:?}", link.peer_interests);
    let call = a
        .request::<Reading, Reading>("admin.reboot", Reading { seq: 1 }, GUARD)
        .await;
    assert!(matches!(call, Err(RequestError::NoListener(_))), "{call:?}");
}
