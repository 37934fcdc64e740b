//! A router dropped without `close()` stops its endpoints as `close()` would: their tasks end
//! (accept and dial loops, link tasks, the libp2p actor and its connections), their listeners
//! close (the port can be bound again) and the mDNS daemon thread exits. Also: a mesh whose
//! runtime shuts down under it stops its mDNS thread.
//!
//! One test runs the scenarios in turn: thread counts are process-wide, and the test harness
//! runs tests in parallel threads.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dndm_core::Keypair;
use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm_router::Router;
use dndm_test_support::Reading as Probe;
use tokio::runtime::Runtime;

/// Only a failure guard: every wait ends as soon as what it waits for happens. Above tokio's
/// 10 s keep-alive of idle blocking-pool threads, should anything start one.
const GUARD: Duration = Duration::from_secs(30);

/// The name of mdns-sd's daemon thread.
const MDNS_THREAD: &str = "mDNS_daemon";

/// The name of the `futures-timer` crate's timer thread (libp2p's handlers use its timers): one
/// per process, started on first use and kept for the life of the process by design, so it is
/// not counted (and checked to stay one).
const TIMER_THREAD: &str = "futures-timer";

#[test]
fn a_router_dropped_without_close_leaves_no_task_thread_or_listener_behind() {
    remote_endpoint_of_a_dropped_router_stops();
    mesh_endpoint_of_a_dropped_router_stops();
    mesh_on_a_runtime_shut_down_stops_its_mdns_thread();
}

/// A router listening on TCP with a peer linked to it (a link task, a handshake behind it).
fn remote_endpoint_of_a_dropped_router_stops() {
    let peer_rt = runtime(1);
    let rt = runtime(2);
    let threads = thread_names();
    rt.block_on(async {
        let tasks = tokio::runtime::Handle::current().metrics();
        let baseline = tasks.num_alive_tasks();

        let a = Router::builder().name("a").build().unwrap();
        let mut config = RemoteConfig::default();
        config.listen = vec![Target::Tcp("127.0.0.1:0".parse().unwrap())];
        let ea = RemoteEndpoint::new(Keypair::from_seed([1; 32]), config).unwrap();
        a.attach(Arc::new(ea.clone())).await.unwrap();
        let Target::Tcp(addr) = ea.bound().remove(0) else {
            panic!("a tcp listener")
        };
        let intent = a.publish::<Probe>("drop.remote").unwrap();

        let (b, eb, _sub) = peer_rt
            .spawn(async move {
                let b = Router::builder().name("b").build().unwrap();
                let mut config = RemoteConfig::default();
                config.dial = vec![Target::Tcp(addr)];
                let eb = RemoteEndpoint::new(Keypair::from_seed([2; 32]), config).unwrap();
                b.attach(Arc::new(eb.clone())).await.unwrap();
                let sub = b.subscribe::<Probe>("drop.*").unwrap();
                (b, eb, sub)
            })
            .await
            .unwrap();
        intent.wait_for_interest(GUARD).await.unwrap();
        assert!(
            tasks.num_alive_tasks() > baseline,
            "the endpoint runs tasks"
        );
        assert!(
            std::net::TcpListener::bind(addr).is_err(),
            "the endpoint listens on {addr}"
        );

        // The intent and the endpoint handle stay: only the router's last clone goes.
        drop(a);
        let mut changes = eb.link_changes();
        tokio::time::timeout(GUARD, changes.wait_for(|_| !eb.is_connected(&ea.peer_id())))
            .await
            .expect("b sees its link to a close")
            .unwrap();
        tasks_settle(&tasks, baseline).await;
        assert!(intent.is_closed());
        std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("{addr} is free again, but: {e}"));
        drop((ea, intent));
        peer_rt.spawn(async move { b.close().await }).await.unwrap();
    });
    threads_settle(&threads);
}

/// A mesh node on TCP with mDNS on and a peer linked to it (a dndm stream over a libp2p
/// connection).
fn mesh_endpoint_of_a_dropped_router_stops() {
    let peer_rt = runtime(1);
    let rt = runtime(2);
    let threads = thread_names();
    rt.block_on(async {
        let tasks = tokio::runtime::Handle::current().metrics();
        let baseline = tasks.num_alive_tasks();

        let a = Router::builder().name("a").build().unwrap();
        let mut config = MeshConfig::default();
        config.transport = Transport::Tcp;
        config.mdns = true;
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        let ea = MeshEndpoint::new(Keypair::from_seed([3; 32]), config).unwrap();
        a.attach(Arc::new(ea.clone())).await.unwrap();
        let listening = tokio::time::timeout(GUARD, ea.wait_listening())
            .await
            .expect("a listens")
            .remove(0);
        let addr = socket_addr(&listening.to_string());
        let intent = a.publish::<Probe>("drop.mesh").unwrap();
        threads_until("a runs an mDNS daemon", |now| {
            mdns_threads(now) == mdns_threads(&threads) + 1
        });

        let (b, eb, _sub) = peer_rt
            .spawn(async move {
                let b = Router::builder().name("b").build().unwrap();
                let mut config = MeshConfig::default();
                config.transport = Transport::Tcp;
                config.mdns = false;
                config.dial = vec![listening];
                let eb = MeshEndpoint::new(Keypair::from_seed([4; 32]), config).unwrap();
                b.attach(Arc::new(eb.clone())).await.unwrap();
                let sub = b.subscribe::<Probe>("drop.*").unwrap();
                (b, eb, sub)
            })
            .await
            .unwrap();
        intent.wait_for_interest(GUARD).await.unwrap();
        assert!(
            std::net::TcpListener::bind(addr).is_err(),
            "the mesh listens on {addr}"
        );

        drop(a);
        let mut changes = eb.link_changes();
        tokio::time::timeout(
            GUARD,
            changes.wait_for(|_| eb.links().iter().all(|link| !link.connected)),
        )
        .await
        .expect("b sees its dndm link to a close")
        .unwrap();
        tasks_settle(&tasks, baseline).await;
        std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("{addr} is free again, but: {e}"));
        drop((ea, intent));
        peer_rt.spawn(async move { b.close().await }).await.unwrap();
    });
    threads_settle(&threads);
}

/// The runtime goes first: the mesh's tasks are dropped unpolled, never seeing a close.
fn mesh_on_a_runtime_shut_down_stops_its_mdns_thread() {
    let threads = thread_names();
    let rt = runtime(1);
    let (router, _mesh) = rt.block_on(async {
        let router = Router::builder().name("a").build().unwrap();
        let mut config = MeshConfig::default();
        config.transport = Transport::Tcp;
        config.mdns = true;
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        let mesh = MeshEndpoint::new(Keypair::from_seed([5; 32]), config).unwrap();
        router.attach(Arc::new(mesh.clone())).await.unwrap();
        tokio::time::timeout(GUARD, mesh.wait_listening())
            .await
            .expect("the mesh listens");
        (router, mesh)
    });
    threads_until("the mesh runs an mDNS daemon", |now| {
        mdns_threads(now) == mdns_threads(&threads) + 1
    });
    drop(rt);
    // Its runtime is gone: the close it starts has nowhere to run (and must not panic).
    drop(router);
    threads_settle(&threads);
}

fn runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Waits (guarded) until the runtime runs no more tasks than `baseline`.
async fn tasks_settle(tasks: &tokio::runtime::RuntimeMetrics, baseline: usize) {
    // No event announces a task leaving the runtime's list; each check yields to the workers.
    let settled = tokio::time::timeout(GUARD, async {
        while tasks.num_alive_tasks() > baseline {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "{} tasks still alive, {baseline} before the router",
        tasks.num_alive_tasks()
    );
}

/// Waits (guarded) until the process runs as many threads as in `baseline`, none of them an
/// mDNS daemon that was not there (the process-wide timer thread aside).
fn threads_settle(baseline: &[String]) {
    let counted = |names: &[String]| names.iter().filter(|n| *n != TIMER_THREAD).count();
    threads_until("the threads before the router, and no more", |now| {
        counted(now) == counted(baseline) && mdns_threads(now) == mdns_threads(baseline)
    });
    let timers = thread_names()
        .into_iter()
        .filter(|n| n == TIMER_THREAD)
        .count();
    assert!(timers <= 1, "{timers} {TIMER_THREAD} threads");
}

/// Waits (guarded) until the process's thread names satisfy `done`.
fn threads_until(what: &str, done: impl Fn(&[String]) -> bool) {
    let deadline = std::time::Instant::now() + GUARD;
    let mut now = thread_names();
    while !done(&now) {
        // Threads announce their start and exit to nobody; a yield gives them the CPU.
        assert!(
            std::time::Instant::now() < deadline,
            "waited for {what}; threads: {now:?}"
        );
        std::thread::yield_now();
        now = thread_names();
    }
}

/// The names of this process's threads, sorted. A thread names itself once it runs, so a new
/// one may still show its parent's name.
fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect();
    names.sort();
    names
}

fn mdns_threads(names: &[String]) -> usize {
    names.iter().filter(|n| *n == MDNS_THREAD).count()
}

/// `127.0.0.1:port` from `/ip4/127.0.0.1/tcp/<port>`.
fn socket_addr(multiaddr: &str) -> SocketAddr {
    let mut parts = multiaddr.split('/').skip(1);
    let (Some("ip4"), Some(ip), Some("tcp"), Some(port)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("not a TCP address: {multiaddr}")
    };
    format!("{ip}:{port}").parse().unwrap()
}
