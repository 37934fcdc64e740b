//! Chat over the libp2p mesh: typed `chat.Line` messages, peers found over mDNS, joins and
//! leaves shown from link events.
//!
//! Every member publishes its lines on `chat.lobby.<name>` and subscribes to `chat.lobby.*`.
//! When another member's intent links to our interest, that member has joined (its name is the
//! last segment of the route); when the link goes away, it has left. Mesh sessions coming and
//! going are shown too (`MeshEndpoint::link_changes`).
//!
//! In two or more terminals on one LAN (mDNS finds the others):
//!
//! ```sh
//! cargo run --example chat -- --name alice
//! cargo run --example chat -- --name bob
//! ```
//!
//! Where mDNS does not reach (containers, VPNs, other subnets), start the second one with
//! `--bootstrap <address>`, using one of the `/ip4/.../p2p/...` addresses the first one prints.
//!
//! Non-interactive: `cargo run --example chat -- --demo 3` runs alice and bob in one process
//! on loopback (mDNS off; bob dials alice), each saying 3 scripted lines, then bob leaves.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::Parser as _;
use dndm::mesh::{MeshConfig, MeshEndpoint};
use dndm::{
    EventsError, HandleId, Intent, Interest, Keypair, LinkEvent, LinkEvents, Origin, PeerId,
    PublishOptions, Qos, Router,
};
use tokio::sync::mpsc;

/// One chat line.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Line {
    #[prost(string, tag = "1")]
    pub(crate) from: String,
    #[prost(string, tag = "2")]
    pub(crate) text: String,
}

impl prost::Name for Line {
    const NAME: &'static str = "Line";
    const PACKAGE: &'static str = "chat";
}
impl dndm::Message for Line {}

/// The room: members publish on `<ROOM>.<name>` and subscribe to `<ROOM>.*`.
const ROOM: &str = "chat.lobby";

/// Failure guard for the mesh to form and for an expected line or event to arrive.
const GUARD: Duration = Duration::from_secs(30);

/// What alice and bob say in `--demo` mode, in turn.
const SCRIPT: [&str; 4] = [
    "hi bob, can you hear me?",
    "loud and clear, alice: typed chat.Line messages",
    "reliable too: nothing lost, nothing reordered",
    "time to go, bye!",
];

/// Command-line arguments.
#[derive(Debug, clap::Parser)]
pub(crate) struct Args {
    /// Your name in the room (one route segment: letters, digits, `-`, `_`).
    #[arg(long, default_value = "anon")]
    name: String,
    /// A member's address to dial (`/ip4/.../tcp/.../p2p/<PeerId>`), where mDNS cannot reach.
    #[arg(long)]
    bootstrap: Vec<String>,
    /// Run alice and bob in this process on loopback, each saying N scripted lines, then exit.
    #[arg(long, value_name = "N")]
    demo: Option<usize>,
}

/// What a run did.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Lines said.
    pub(crate) sent: usize,
    /// Lines heard from other members, each checked against what was said.
    pub(crate) heard: usize,
    /// Joins and leaves seen, as printed (`[alice] * bob joined ...`).
    pub(crate) presence: Vec<String>,
}

/// One member of the room: a router with a mesh endpoint, its intent and its interest.
struct Member {
    name: String,
    router: Router,
    mesh: MeshEndpoint,
    say: Intent<Line>,
    hear: Interest<Line>,
    events: LinkEvents,
    /// The other members' intents linked to `hear`, by handle, with their names.
    members: HashMap<HandleId, String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Args::parse()).await.map(drop)
}

/// Runs the demo (`--demo N`) or an interactive member.
pub(crate) async fn run(args: Args) -> anyhow::Result<Report> {
    match args.demo {
        Some(lines) => demo(lines).await,
        None => interactive(args).await,
    }
}

/// Alice and bob on loopback, taking turns through the script; bob leaves at the end.
async fn demo(lines: usize) -> anyhow::Result<Report> {
    let loopback = "/ip4/127.0.0.1/tcp/0";
    let alice = Member::join("alice", loopback, false, &[]).await?;
    // `listen_addresses` returns once there is at least one.
    let address = listen_addresses(&alice.mesh).await?.remove(0);
    let bob = Member::join("bob", loopback, false, std::slice::from_ref(&address)).await?;
    println!("chat demo: alice listens on {address}; bob dials her (mDNS off)");
    let mut report = Report::default();
    let mut members = [alice, bob];
    for member in &mut members {
        // Joined, and our intent linked to the other's interest (2 subscribers with our own):
        // from here on, every line said reaches the other member.
        member
            .wait_for(&mut report, |m| !m.members.is_empty())
            .await?;
        let mut events = member.say.events();
        while member.say.subscriber_count() < 2 {
            tokio::time::timeout(GUARD, events.recv())
                .await
                .context("no subscriber")??;
        }
    }
    let [alice, bob] = &mut members;
    for (turn, text) in SCRIPT.iter().cycle().take(2 * lines).enumerate() {
        let (speaker, listener) = match turn % 2 {
            0 => (&*alice, &mut *bob),
            _ => (&*bob, &mut *alice),
        };
        speaker.say(text).await?;
        report.sent += 1;
        let mut line = listener.hear.recv_timeout(GUARD).await?;
        while line.from == listener.name {
            // Our own lines come back through the local link.
            line = listener.hear.recv_timeout(GUARD).await?;
        }
        println!("[{}] {}: {}", listener.name, line.from, line.text);
        ensure!(
            line.from == speaker.name && line.text == *text,
            "garbled: {line:?}"
        );
        report.heard += 1;
    }
    // Bob leaves the room; alice sees his intent unlink.
    bob.leave();
    alice
        .wait_for(&mut report, |m| m.members.is_empty())
        .await?;
    for member in members.iter().rev() {
        member.router.close().await;
    }
    println!("{} lines said, {} heard", report.sent, report.heard);
    Ok(report)
}

/// One member on the LAN, chatting from stdin until end of input or Ctrl-C.
async fn interactive(args: Args) -> anyhow::Result<Report> {
    let mut me = Member::join(&args.name, "/ip4/0.0.0.0/tcp/0", true, &args.bootstrap).await?;
    for address in listen_addresses(&me.mesh).await? {
        println!("listening on {address}");
    }
    println!(
        "{} in {ROOM}: type a line, Enter; Ctrl-D or Ctrl-C leaves",
        me.name
    );
    let (mut input, mut links) = (stdin_lines(), me.mesh.link_changes());
    let (mut sessions, mut report) = (BTreeSet::new(), Report::default());
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            biased;
            _ = &mut ctrl_c => break,
            text = input.recv() => match text {
                Some(text) => {
                    me.say(&text).await?;
                    report.sent += 1;
                }
                None => break,
            },
            line = me.hear.recv() => {
                let line = line?;
                if line.from != me.name {
                    println!("{}: {}", line.from, line.text);
                    report.heard += 1;
                }
            }
            event = me.events.recv() => match event {
                Ok(event) => if let Some(shown) = me.on_event(event) {
                    println!("{shown}");
                }
                Err(EventsError::Lagged(_)) => {}
                Err(_) => break,
            },
            // Sessions come and go with peers, also those that vanish without leaving.
            changed = links.changed() => {
                changed?;
                let peers = me.mesh.mesh_peers();
                let up: BTreeSet<PeerId> =
                    peers.iter().filter(|p| p.session).map(|p| p.peer).collect();
                up.difference(&sessions).for_each(|p| println!("* session up with {p}"));
                sessions.difference(&up).for_each(|p| println!("* session down with {p}"));
                sessions = up;
            }
        }
    }
    me.leave();
    me.router.close().await;
    Ok(report)
}

impl Member {
    /// Declares the member's routes, then attaches a mesh endpoint (declaring first means no
    /// link event can happen before `events` is listening).
    async fn join(name: &str, listen: &str, mdns: bool, dial: &[String]) -> anyhow::Result<Self> {
        let router = Router::builder().name(name).build()?;
        let hear = router.subscribe::<Line>(&format!("{ROOM}.*"))?;
        let events = hear.events();
        let reliable = PublishOptions::default().qos(Qos::reliable());
        let say = router.publish_with::<Line>(&format!("{ROOM}.{name}"), reliable)?;
        let mut config = MeshConfig::default();
        config.listen = vec![listen.parse()?];
        config.mdns = mdns;
        for address in dial {
            config
                .dial
                .push(address.parse().context("bad --bootstrap")?);
        }
        config.remote.session.node_name = name.to_owned();
        let mesh = MeshEndpoint::new(Keypair::generate()?, config)?;
        router.attach(Arc::new(mesh.clone())).await?;
        let (name, members) = (name.to_owned(), HashMap::new());
        Ok(Self {
            name,
            router,
            mesh,
            say,
            hear,
            events,
            members,
        })
    }

    /// Says one line.
    async fn say(&self, text: &str) -> anyhow::Result<()> {
        let (from, text) = (self.name.clone(), text.to_owned());
        Ok(self.say.send(Line { from, text }).await?)
    }

    /// Leaves the room: the others see our intent unlink.
    fn leave(&self) {
        self.say.close();
        self.hear.close();
    }

    /// Shows joins and leaves until `done` holds.
    async fn wait_for(
        &mut self,
        report: &mut Report,
        done: fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        while !done(self) {
            let event = tokio::time::timeout(GUARD, self.events.recv())
                .await
                .context("no event")?;
            if let Some(shown) = self.on_event(event?) {
                let shown = format!("[{}] {shown}", self.name);
                println!("{shown}");
                report.presence.push(shown);
            }
        }
        Ok(())
    }

    /// A join (a peer's intent linked to our interest, named by its route's last segment), a
    /// leave (it unlinked) or a refused match (the same type name with another schema).
    fn on_event(&mut self, event: LinkEvent) -> Option<String> {
        match event {
            LinkEvent::Linked {
                other,
                route,
                origin: Origin::Peer(peer),
                ..
            } => {
                let name = route.path().rsplit('.').next().unwrap_or_default();
                self.members.insert(other, name.to_owned());
                Some(format!("* {name} joined (peer {peer})"))
            }
            LinkEvent::Unlinked {
                other,
                origin: Origin::Peer(_),
            } => self
                .members
                .remove(&other)
                .map(|name| format!("* {name} left")),
            LinkEvent::Refused { route, error, .. } => Some(format!("* {route} refused: {error}")),
            _ => None,
        }
    }
}

/// The mesh's listen addresses with `/p2p/<PeerId>`, once its listener is up.
async fn listen_addresses(mesh: &MeshEndpoint) -> anyhow::Result<Vec<String>> {
    let addresses = tokio::time::timeout(GUARD, mesh.wait_listening())
        .await
        .context("the mesh listener did not come up")?;
    let id = mesh.peer_id();
    Ok(addresses.iter().map(|a| format!("{a}/p2p/{id}")).collect())
}

/// Lines typed on stdin, read on a thread of their own: a blocking read cannot be cancelled,
/// and would hold up the runtime's shutdown (tokio's `stdin` docs recommend this).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}
