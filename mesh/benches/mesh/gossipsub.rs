//! The gossipsub side: one `gossipsub::Behaviour` swarm per process.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, TopicHash, ValidationMode};
use libp2p::swarm::SwarmEvent;
use libp2p::{Swarm, noise, tcp, yamux};

use crate::{
    CLOCK_EVERY, GUARD, HEADER, MAX_ROUNDS, Payloads, QUEUE_FULL_WAIT, REPS, Row, Rtt, SIZES,
    Settings, Throughput, announce, max_count, rtt_of, spawn_child, stop_child, wait_stdin_closed,
};

/// Frame kinds on gossipsub topics.
mod kind {
    /// Data of a throughput run (parent → child, topic `data`).
    pub const DATA: u8 = b'D';
    /// End of a run; payload: messages sent (parent → child, topic `data`).
    pub const END: u8 = b'E';
    /// Count of a run's data received; payload: the count (child → parent, topic `done`).
    pub const COUNT: u8 = b'C';
    /// The child knows the parent's subscriptions (child → parent, topic `done`).
    pub const READY: u8 = b'R';
    /// Ping (parent → child, topic `ping`).
    pub const PING: u8 = b'P';
    /// Pong; payload: the ping's sequence number (child → parent, topic `pong`).
    pub const PONG: u8 = b'Q';
}

fn topic(name: &str) -> TopicHash {
    IdentTopic::new(name).hash()
}

/// gossipsub settings for a two-node mesh:
///
/// - `mesh_n` 1, `mesh_n_low` 1, `mesh_n_high` 2, `mesh_outbound_min` 0, `gossip_lazy` 1:
///   the only other node is the whole mesh; no gossip to absent peers.
/// - `flood_publish` on (the default): a publish goes straight to every subscribed peer, so
///   nothing waits for the first heartbeat to build the mesh.
/// - `max_transmit_size` 128 KiB (default 64 KiB): a 64 KiB payload plus the protobuf
///   envelope and signature must fit.
/// - `connection_handler_queue_len` 1024 (default 5000): enough to keep the connection busy,
///   without queueing 300 MB of 64 KiB messages.
/// - Signed: `ValidationMode::Strict` and the default message id (author + sequence number).
///   Anonymous: `ValidationMode::None`, and the message id is this bench's frame header (kind
///   and sequence number), since anonymous messages carry no author or sequence number.
/// - Everything else default (heartbeat 1 s, duplicate cache 60 s, IDONTWANT on forward only).
fn config(signed: bool) -> gossipsub::Config {
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        .mesh_n(1)
        .mesh_n_low(1)
        .mesh_n_high(2)
        .mesh_outbound_min(0)
        .gossip_lazy(1)
        .flood_publish(true)
        .max_transmit_size(128 * 1024)
        .connection_handler_queue_len(1024);
    if signed {
        builder.validation_mode(ValidationMode::Strict);
    } else {
        builder
            .validation_mode(ValidationMode::None)
            .message_id_fn(|m: &gossipsub::Message| gossipsub::MessageId::new(&m.data[..HEADER]));
    }
    builder.build().unwrap()
}

/// One gossipsub node: the swarm, events set aside while waiting, and counters.
struct Node {
    swarm: Swarm<gossipsub::Behaviour>,
    inbox: VecDeque<SwarmEvent<gossipsub::Event>>,
    /// Sequence number of this node's last frame (unique per node and kind, for message ids).
    next: u64,
    /// Publishes refused because every peer queue was full.
    queue_full: u64,
}

impl Node {
    fn new(seed: u8, signed: bool) -> Self {
        let key = libp2p::identity::Keypair::ed25519_from_bytes([seed; 32]).unwrap();
        let authenticity = if signed {
            MessageAuthenticity::Signed(key.clone())
        } else {
            MessageAuthenticity::Anonymous
        };
        let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| gossipsub::Behaviour::new(authenticity, config(signed)).unwrap())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        Self {
            swarm,
            inbox: VecDeque::new(),
            next: 0,
            queue_full: 0,
        }
    }

    fn subscribe(&mut self, name: &str) {
        self.swarm
            .behaviour_mut()
            .subscribe(&IdentTopic::new(name))
            .unwrap();
    }

    /// The next swarm event: one set aside first.
    ///
    /// # Cancel safety
    /// Cancel safe.
    async fn next_event(&mut self) -> SwarmEvent<gossipsub::Event> {
        match self.inbox.pop_front() {
            Some(event) => event,
            None => self.swarm.select_next_some().await,
        }
    }

    /// Sets aside every event that is ready now, so the connection tasks never wait on the
    /// swarm while this node publishes in a loop.
    fn pump(&mut self) {
        while let Some(Some(event)) = self.swarm.next().now_or_never() {
            self.inbox.push_back(event);
        }
    }

    /// Publishes one frame, retrying (with a new sequence number) while every queue is full.
    async fn publish(&mut self, topic: &TopicHash, kind: u8, payload: &[u8]) {
        loop {
            self.next += 1;
            let mut frame = Vec::with_capacity(HEADER + payload.len());
            frame.push(kind);
            frame.extend_from_slice(&self.next.to_le_bytes());
            frame.extend_from_slice(payload);
            match self.swarm.behaviour_mut().publish(topic.clone(), frame) {
                Ok(_) => return,
                Err(gossipsub::PublishError::AllQueuesFull(_)) => {
                    self.queue_full += 1;
                    if let Ok(event) =
                        tokio::time::timeout(QUEUE_FULL_WAIT, self.swarm.select_next_some()).await
                    {
                        self.inbox.push_back(event);
                    }
                }
                Err(e) => panic!("gossipsub publish: {e}"),
            }
        }
    }

    /// Waits for a message of `kind`; returns its payload. Other events are dropped.
    async fn wait_message(&mut self, kind: u8) -> Vec<u8> {
        tokio::time::timeout(GUARD, async {
            loop {
                if let SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) =
                    self.next_event().await
                    && message.data.first() == Some(&kind)
                {
                    return message.data[HEADER..].to_vec();
                }
            }
        })
        .await
        .expect("the awaited gossipsub message arrives")
    }
}

fn u64_of(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

/// Child: counts data runs and echoes pings until stdin closes.
pub(crate) async fn child(signed: bool) {
    let mut node = Node::new(2, signed);
    node.swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    node.subscribe("data");
    node.subscribe("ping");
    let (pong, done) = (topic("pong"), topic("done"));
    let mut parent_topics = HashSet::new();
    let mut ready = false;
    let mut count = 0u64;
    let stdin_closed = wait_stdin_closed();
    tokio::pin!(stdin_closed);
    loop {
        let event = tokio::select! {
            biased;
            () = &mut stdin_closed => break,
            event = node.next_event() => event,
        };
        match event {
            SwarmEvent::NewListenAddr { address, .. } => announce(&address),
            SwarmEvent::Behaviour(gossipsub::Event::Subscribed { topic, .. }) => {
                parent_topics.insert(topic);
                if !ready && parent_topics.contains(&pong) && parent_topics.contains(&done) {
                    ready = true;
                    node.publish(&done, kind::READY, &[]).await;
                }
            }
            SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) => {
                match message.data[0] {
                    kind::DATA => count += 1,
                    kind::END => {
                        node.publish(&done, kind::COUNT, &count.to_le_bytes()).await;
                        count = 0;
                    }
                    kind::PING => {
                        let seq = message.data[1..HEADER].to_vec();
                        node.publish(&pong, kind::PONG, &seq).await;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

async fn throughput(node: &mut Node, size: usize, settings: Settings) -> Throughput {
    let data = topic("data");
    let mut payloads = Payloads::new(size);
    let max = max_count(size);
    let run_time = settings.run_time();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < max {
        node.publish(&data, kind::DATA, &payloads.next()).await;
        sent += 1;
        if sent.is_multiple_of(CLOCK_EVERY) {
            node.pump();
            if start.elapsed() >= run_time {
                break;
            }
        }
    }
    node.publish(&data, kind::END, &sent.to_le_bytes()).await;
    let received = u64_of(&node.wait_message(kind::COUNT).await);
    Throughput {
        sent,
        received,
        elapsed: start.elapsed(),
        per_batch: None,
        wire_per_msg: None,
    }
}

async fn rtt(node: &mut Node, settings: Settings) -> Rtt {
    let ping = topic("ping");
    let data = Payloads::new(8).next();
    let mut samples = Vec::with_capacity(MAX_ROUNDS);
    let series = Instant::now();
    for _ in 0..MAX_ROUNDS {
        let start = Instant::now();
        node.publish(&ping, kind::PING, &data).await;
        let sent = node.next;
        let echoed = u64_of(&node.wait_message(kind::PONG).await);
        samples.push(start.elapsed());
        assert_eq!(echoed, sent);
        if series.elapsed() >= settings.rtt_time() {
            break;
        }
    }
    rtt_of(samples)
}

pub(crate) fn name(signed: bool) -> &'static str {
    if signed {
        "gossipsub+sign"
    } else {
        "gossipsub"
    }
}

pub(crate) async fn bench(signed: bool, settings: Settings) -> Row {
    let name = name(signed);
    let (child, addr) = spawn_child(name);
    let mut node = Node::new(1, signed);
    node.subscribe("pong");
    node.subscribe("done");
    node.swarm.dial(addr).unwrap();
    // Ready: the child subscribed to `data` and `ping`, and knows our subscriptions.
    let (data, ping) = (topic("data"), topic("ping"));
    tokio::time::timeout(GUARD, async {
        let mut child_topics = HashSet::new();
        let mut ready = false;
        while !(ready && child_topics.contains(&data) && child_topics.contains(&ping)) {
            match node.next_event().await {
                SwarmEvent::Behaviour(gossipsub::Event::Subscribed { topic, .. }) => {
                    child_topics.insert(topic);
                }
                SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. })
                    if message.data.first() == Some(&kind::READY) =>
                {
                    ready = true;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the gossipsub nodes see each other's subscriptions");
    let mut runs = Vec::new();
    for size in SIZES {
        settings.progress(&format!("{name} {size} B"));
        let mut reps = Vec::new();
        for _ in 0..REPS {
            reps.push(throughput(&mut node, size, settings).await);
        }
        runs.push(Throughput::median(reps));
    }
    let rtt = rtt(&mut node, settings).await;
    let queue_full = node.queue_full;
    drop(node);
    stop_child(child);
    Row {
        name: format!(
            "{name} ({})",
            if signed {
                "Signed, Strict"
            } else {
                "Anonymous, None"
            }
        ),
        runs,
        rtt,
        request: None,
        queue_full: Some(queue_full),
    }
}
