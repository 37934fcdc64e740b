//! Request/response across the mesh: a calculator service (`Router::serve`) on one node, callers
//! (`Router::request`) on another. Shows answers to concurrent calls, a handler error (division
//! by zero), a timeout (a handler that does not answer in time) and a route nobody serves.
//!
//! Both nodes in one process, on loopback (mDNS off; the caller dials the server):
//!
//! ```sh
//! cargo run --example request_response
//! ```
//!
//! Across two terminals on a LAN (peers found over mDNS; `--bootstrap <address>` where mDNS
//! does not reach):
//!
//! ```sh
//! cargo run --example request_response -- --serve
//! cargo run --example request_response -- --call
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use dndm::mesh::{MeshConfig, MeshEndpoint};
use dndm::{HandlerError, Keypair, RequestError, Router, Service};
use tokio::sync::Notify;

/// A division to compute.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Divide {
    #[prost(double, tag = "1")]
    dividend: f64,
    #[prost(double, tag = "2")]
    divisor: f64,
}

impl prost::Name for Divide {
    const NAME: &'static str = "Divide";
    const PACKAGE: &'static str = "calc";
}
impl dndm::Message for Divide {}

/// Its result.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Quotient {
    #[prost(double, tag = "1")]
    value: f64,
}

impl prost::Name for Quotient {
    const NAME: &'static str = "Quotient";
    const PACKAGE: &'static str = "calc";
}
impl dndm::Message for Quotient {}

/// Failure guard for the mesh to form and for a call that should be answered.
const GUARD: Duration = Duration::from_secs(30);

/// How long the caller waits for the stuck `calc.slow` handler.
const SLOW_TIMEOUT: Duration = Duration::from_millis(250);

/// Command-line arguments.
#[derive(Debug, clap::Parser)]
pub(crate) struct Args {
    /// Serve `calc.divide` and `calc.slow` on the LAN until Ctrl-C.
    #[arg(long, conflicts_with = "call")]
    serve: bool,
    /// Call a server found on the LAN, then exit.
    #[arg(long)]
    call: bool,
    /// A node's address to dial (`/ip4/.../tcp/.../p2p/<PeerId>`), where mDNS cannot reach.
    #[arg(long)]
    bootstrap: Vec<String>,
}

/// What the caller saw.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Answers to the successful calls, in call order.
    pub(crate) answers: Vec<f64>,
    /// The handler's error for the division by zero.
    pub(crate) handler_error: Option<String>,
    /// Whether the call to the stuck handler timed out.
    pub(crate) timed_out: bool,
    /// Whether the call to the route nobody serves failed at once with `NoListener`.
    pub(crate) no_listener: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Args::parse()).await.map(drop)
}

/// Runs the server, the caller, or both on loopback.
pub(crate) async fn run(args: Args) -> anyhow::Result<Report> {
    let lan = "/ip4/0.0.0.0/tcp/0";
    if args.serve {
        let (server, mesh) = node("server", lan, true, &args.bootstrap).await?;
        let _services = serve(&server, Arc::new(Notify::new()))?;
        for address in listen_addresses(&mesh).await? {
            println!("serving calc.divide and calc.slow; listening on {address}");
        }
        tokio::signal::ctrl_c().await?;
        server.close().await;
        return Ok(Report::default());
    }
    if args.call {
        let (caller, _mesh) = node("caller", lan, true, &args.bootstrap).await?;
        let report = calls(&caller, || {}).await;
        caller.close().await;
        return report;
    }
    let loopback = "/ip4/127.0.0.1/tcp/0";
    let (server, server_mesh) = node("server", loopback, false, &[]).await?;
    let release = Arc::new(Notify::new());
    let _services = serve(&server, release.clone())?;
    // `listen_addresses` returns once there is at least one.
    let address = listen_addresses(&server_mesh).await?.remove(0);
    let (caller, _mesh) = node("caller", loopback, false, std::slice::from_ref(&address)).await?;
    println!("server listens on {address}; the caller dials it (mDNS off)");
    let report = calls(&caller, || release.notify_waiters()).await;
    caller.close().await;
    server.close().await;
    report
}

/// Serves `calc.divide` (fails on a zero divisor) and `calc.slow` (answers only once `release`
/// is notified, or never).
fn serve(router: &Router, release: Arc<Notify>) -> anyhow::Result<[Service; 2]> {
    let divide = router.serve::<Divide, Quotient, _, _>("calc.divide", |d| async move {
        if d.divisor == 0.0 {
            return Err(HandlerError::new("division by zero"));
        }
        Ok(Quotient {
            value: d.dividend / d.divisor,
        })
    })?;
    let slow = router.serve::<Divide, Quotient, _, _>("calc.slow", move |d| {
        let release = release.clone();
        async move {
            release.notified().await;
            Ok(Quotient {
                value: d.dividend / d.divisor,
            })
        }
    })?;
    Ok([divide, slow])
}

/// Makes every kind of call; `release` lets the stuck handler finish after its caller gave up.
async fn calls(caller: &Router, release: impl FnOnce()) -> anyhow::Result<Report> {
    let mut report = Report::default();
    // Until the server's service declaration arrives, requests fail with the transient
    // `NoListener`: retry on a short tick.
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let first = tokio::time::timeout(GUARD, async {
        loop {
            tick.tick().await;
            match divide(caller, "calc.divide", 10.0, 4.0, GUARD).await {
                Err(RequestError::NoListener(_)) => continue,
                other => return other,
            }
        }
    });
    let first = first.await.context("no server found")??;
    println!(
        "10 / 4 = {first} (service found after {:.0?})",
        started.elapsed()
    );
    report.answers.push(first);

    // Concurrent calls share the one session to the server.
    let pairs = [(1.0, 3.0), (22.0, 7.0), (355.0, 113.0), (-9.0, 2.0)];
    let started = Instant::now();
    let answers = futures::future::join_all(
        pairs
            .iter()
            .map(|&(a, b)| divide(caller, "calc.divide", a, b, GUARD)),
    );
    for ((a, b), answer) in pairs.iter().zip(answers.await) {
        let answer = answer?;
        println!("{a} / {b} = {answer:.6}");
        report.answers.push(answer);
    }
    println!(
        "{} concurrent calls answered in {:.1?}",
        pairs.len(),
        started.elapsed()
    );

    match divide(caller, "calc.divide", 1.0, 0.0, GUARD).await {
        Err(RequestError::Handler { message, .. }) => {
            println!("1 / 0 failed in the handler: {message}");
            report.handler_error = Some(message);
        }
        other => anyhow::bail!("1 / 0 should fail in the handler, got {other:?}"),
    }
    match divide(caller, "calc.slow", 1.0, 1.0, SLOW_TIMEOUT).await {
        Err(e @ RequestError::Timeout { .. }) => {
            println!("calc.slow: {e} (transient: {})", e.is_transient());
            report.timed_out = true;
        }
        other => anyhow::bail!("calc.slow should time out, got {other:?}"),
    }
    // Its late answer finds no caller and is dropped.
    release();
    match divide(caller, "calc.nobody", 1.0, 1.0, GUARD).await {
        Err(e @ RequestError::NoListener(_)) => {
            println!("calc.nobody: {e}");
            report.no_listener = true;
        }
        other => anyhow::bail!("calc.nobody should have no listener, got {other:?}"),
    }
    Ok(report)
}

/// Asks the service on `path` for `a / b`.
async fn divide(
    caller: &Router,
    path: &str,
    a: f64,
    b: f64,
    timeout: Duration,
) -> Result<f64, RequestError> {
    let request = Divide {
        dividend: a,
        divisor: b,
    };
    let answer = caller
        .request::<Divide, Quotient>(path, request, timeout)
        .await?;
    Ok(answer.value)
}

/// A router with a mesh endpoint listening on `listen`.
async fn node(
    name: &str,
    listen: &str,
    mdns: bool,
    dial: &[String],
) -> anyhow::Result<(Router, MeshEndpoint)> {
    let router = Router::builder().name(name).build()?;
    let mut config = MeshConfig::default();
    config.listen = vec![listen.parse()?];
    config.mdns = mdns;
    for address in dial {
        config
            .dial
            .push(address.parse().context("bad --bootstrap address")?);
    }
    config.remote.session.node_name = name.to_owned();
    let mesh = MeshEndpoint::new(Keypair::generate()?, config)?;
    router.attach(Arc::new(mesh.clone())).await?;
    Ok((router, mesh))
}

/// The mesh's listen addresses with `/p2p/<PeerId>`, once its listener is up.
async fn listen_addresses(mesh: &MeshEndpoint) -> anyhow::Result<Vec<String>> {
    let addresses = tokio::time::timeout(GUARD, mesh.wait_listening())
        .await
        .context("the mesh listener did not come up")?;
    let id = mesh.peer_id();
    Ok(addresses.iter().map(|a| format!("{a}/p2p/{id}")).collect())
}
