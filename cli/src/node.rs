//! `dndm node`: a long-running node from a TOML file plus `DNDM_*` environment overrides.
//!
//! It joins the mesh (`[mesh] enabled = true`) and/or runs remote links (`[remote] enabled =
//! true`) with one identity (`node.identity_file`, else a fresh one), serves `GET /metrics`
//! (Prometheus), `GET /healthz` (live), `GET /readyz` (ready: endpoints attached, every
//! `node.required_peers` connected, no dial breaker open; 503 with the reasons otherwise) and
//! `GET /snapshot` (JSON) on `metrics.listen` when `metrics.enabled`, and stops cleanly on SIGINT
//! or SIGTERM (or at the end of standard input with `--stop-on-eof`).
//!
//! At start it prints, on standard output, one line per fact, then `ready`:
//!
//! ```text
//! node <name> <PeerId>
//! mesh <multiaddr>/p2p/<PeerId>      (one line per mesh listen address)
//! remote <address>                   (one line per remote-link listen address)
//! metrics http://<address>           (/metrics /healthz /readyz /snapshot)
//! ready
//! ```

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use dndm::builtin::{Bytes, Json, Text};
use dndm::mesh::MeshEndpoint;
use dndm::remote::endpoint::RemoteEndpoint;
use dndm::{Keypair, Router};
use dndm_cli::Config;
use dndm_cli::config::{mesh_config, remote_config, router_builder};
use hyper::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::health;
use crate::http::{self, Body};
use crate::metrics::{self, Observed};
use crate::pubsub::{Kind, Line, print_messages};
use crate::{config_error, signals};

/// Arguments of `dndm node`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The node's TOML configuration ([node] [router] [remote] [mesh] [metrics]); every key is
    /// optional, and DNDM_<SECTION>__<KEY> environment variables override it.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also subscribe to PATTERN (repeatable) and print each message on standard output.
    #[arg(long = "subscribe", value_name = "PATTERN")]
    subscribe: Vec<String>,
    /// Message type of --subscribe.
    #[arg(long = "type", value_enum, default_value_t)]
    kind: Kind,
    /// Also stop when standard input reaches its end (for supervisors and tests).
    #[arg(long)]
    stop_on_eof: bool,
}

/// Runs the node until a signal (or end of input with `--stop-on-eof`).
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())
        .map_err(|e| config_error(args.config.as_deref(), &e))?;
    let keypair = match &config.node.identity_file {
        Some(path) => Keypair::load_or_generate(path).context("node.identity_file")?,
        None => Keypair::generate().context("cannot generate an identity")?,
    };
    let router = router_builder(&config).build()?;
    let result = serve(&args, &config, keypair, &router).await;
    router.close().await;
    result
}

async fn serve(
    args: &Args,
    config: &Config,
    keypair: Keypair,
    router: &Router,
) -> anyhow::Result<()> {
    let peer_id = keypair.peer_id();
    println!("node {} {peer_id}", config.node.name);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    // The HTTP endpoints come first, so probes get an answer (`/readyz`: starting) while the
    // endpoints start.
    let served = Arc::new(Served {
        observed: OnceLock::new(),
        required_peers: config.node.required_peers.clone(),
    });
    if config.metrics.enabled {
        let listener = TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| {
                format!(
                    "metrics.listen = {:?}: cannot listen on {}",
                    config.metrics.listen, config.metrics.listen
                )
            })?;
        let address = listener.local_addr()?;
        let served = served.clone();
        let handler: http::Handler = Arc::new(move |path: &str| served.answer(path));
        tracker.spawn(http::serve(
            listener,
            handler,
            cancel.clone(),
            tracker.clone(),
        ));
        println!("metrics http://{address}");
    }
    let result = start_endpoints(args, config, keypair, router, &served, &tracker).await;
    if result.is_ok() {
        println!("ready");
        let reason = stop_reason(args).await;
        match reason {
            Ok(reason) => eprintln!("node: {reason}; stopping"),
            Err(ref e) => eprintln!("node: {e}; stopping"),
        }
    }
    cancel.cancel();
    tracker.close();
    router.close().await;
    tracker.wait().await;
    result
}

/// Starts the remote links and the mesh as configured, and the `--subscribe` printers.
async fn start_endpoints(
    args: &Args,
    config: &Config,
    keypair: Keypair,
    router: &Router,
    served: &Served,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let peer_id = keypair.peer_id();
    let mut observed = Observed {
        router: router.clone(),
        peer_id,
        mesh: None,
        remote: None,
    };
    if config.remote.enabled {
        let remote = RemoteEndpoint::new(keypair.clone(), remote_config(config)?)?;
        router
            .attach(Arc::new(remote.clone()))
            .await
            .with_context(|| {
                format!(
                    "cannot start remote links (remote.listen = {:?})",
                    config.remote.listen
                )
            })?;
        for target in remote.bound() {
            println!("remote {target}");
        }
        observed.remote = Some(remote);
    }
    if config.mesh.enabled {
        let mesh = MeshEndpoint::new(keypair, mesh_config(config)?)?;
        router
            .attach(Arc::new(mesh.clone()))
            .await
            .with_context(|| {
                format!(
                    "cannot join the mesh (mesh.listen = {:?})",
                    config.mesh.listen
                )
            })?;
        if !config.mesh.listen.is_empty() {
            crate::demo::first_listen_address(&mesh).await?;
            for address in mesh.listening() {
                println!("mesh {address}/p2p/{peer_id}");
            }
        }
        observed.mesh = Some(mesh);
    }
    if !config.mesh.enabled && !config.remote.enabled {
        eprintln!("node: neither [mesh] nor [remote] is enabled; the node reaches no peer");
    }
    let _ = served.observed.set(observed);
    for pattern in &args.subscribe {
        match args.kind {
            Kind::Text => tracker.spawn(subscribe::<Text>(router, pattern)?),
            Kind::Json => tracker.spawn(subscribe::<Json>(router, pattern)?),
            Kind::Bytes => tracker.spawn(subscribe::<Bytes>(router, pattern)?),
        };
    }
    Ok(())
}

/// Waits for a signal (or end of input with `--stop-on-eof`) and names it.
async fn stop_reason(args: &Args) -> anyhow::Result<String> {
    let eof = if args.stop_on_eof {
        Some(end_of_input())
    } else {
        None
    };
    tokio::select! {
        signal = signals::shutdown() => Ok(signal?.to_owned()),
        () = async {
            match eof {
                Some(eof) => { let _ = eof.await; }
                None => std::future::pending().await,
            }
        } => Ok("end of input".to_owned()),
    }
}

/// What the HTTP endpoints answer from: the node once its endpoints are attached.
#[derive(Debug)]
struct Served {
    observed: OnceLock<Observed>,
    required_peers: Vec<String>,
}

impl Served {
    fn answer(&self, path: &str) -> Option<Body> {
        let snapshot = || self.observed.get().map(Observed::snapshot);
        let starting = || Body {
            status: StatusCode::SERVICE_UNAVAILABLE,
            content_type: "text/plain",
            text: "starting: endpoints are not attached yet\n".to_owned(),
        };
        Some(match path {
            "/healthz" => Body::ok("text/plain", "ok\n".to_owned()),
            "/readyz" => {
                let reasons = health::not_ready(snapshot().as_ref(), &self.required_peers);
                if reasons.is_empty() {
                    Body::ok("text/plain", "ready\n".to_owned())
                } else {
                    Body {
                        status: StatusCode::SERVICE_UNAVAILABLE,
                        content_type: "text/plain",
                        text: format!("not ready\n{}\n", reasons.join("\n")),
                    }
                }
            }
            "/metrics" => match snapshot() {
                Some(snapshot) => Body::ok(metrics::CONTENT_TYPE, metrics::render(&snapshot)),
                None => starting(),
            },
            "/snapshot" => match snapshot() {
                Some(mut snapshot) => {
                    // Readiness from this very snapshot, so that `dndm status` shows one state.
                    let reasons = health::not_ready(Some(&snapshot), &self.required_peers);
                    snapshot.not_ready = Some(reasons);
                    Body::ok(
                        "application/json",
                        serde_json::to_string_pretty(&snapshot).unwrap_or_default(),
                    )
                }
                None => starting(),
            },
            _ => return None,
        })
    }
}

/// Subscribes to `pattern` and returns the task printing its messages.
fn subscribe<T: Line>(
    router: &Router,
    pattern: &str,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let interest = router
        .subscribe::<T>(pattern)
        .with_context(|| format!("--subscribe {pattern:?}"))?;
    Ok(async move {
        let _ = print_messages(interest, None).await;
    })
}

/// Resolves when standard input reaches its end (or fails), read on a thread.
fn end_of_input() -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        let mut buf = [0u8; 1024];
        while matches!(input.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    rx
}
