//! Two routers joined by a remote link over loopback TCP, in one process: typed pub/sub and a
//! request/response service across the link, then an orderly close.
//!
//! `cargo run --example remote_pair`

use std::sync::Arc;
use std::time::Duration;

use dndm::remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm::{HandlerError, Keypair, PublishOptions, Qos, Router};

#[derive(Clone, PartialEq, prost::Message)]
struct Temperature {
    #[prost(float, tag = "1")]
    celsius: f32,
}

impl prost::Name for Temperature {
    const NAME: &'static str = "Temperature";
    const PACKAGE: &'static str = "example";
}
impl dndm::Message for Temperature {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The sensor node listens; the display node dials it.
    let sensor = Router::builder().name("sensor").build()?;
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse()?)];
    let listener = RemoteEndpoint::new(Keypair::generate()?, config)?;
    sensor.attach(Arc::new(listener.clone())).await?;

    let display = Router::builder().name("display").build()?;
    let mut config = RemoteConfig::default();
    config.dial = listener.bound();
    let dialer = RemoteEndpoint::new(Keypair::generate()?, config)?;
    display.attach(Arc::new(dialer)).await?;

    let _calibrate =
        sensor.serve::<Temperature, Temperature, _, _>("lab.calibrate", |t| async move {
            Ok::<_, HandlerError>(Temperature {
                celsius: t.celsius - 0.5,
            })
        })?;
    let readings = sensor
        .publish_with::<Temperature>("lab.room1", PublishOptions::default().qos(Qos::reliable()))?;
    let mut screen = display.subscribe::<Temperature>("lab.*")?;

    readings.wait_for_interest(Duration::from_secs(5)).await?;
    println!(
        "display {} subscribed from the other router",
        screen.pattern()
    );
    for i in 0..5 {
        readings
            .send(Temperature {
                celsius: 20.0 + i as f32,
            })
            .await?;
    }
    for _ in 0..5 {
        let t = screen.recv_timeout(Duration::from_secs(5)).await?;
        println!("display got {:.1} °C", t.celsius);
    }
    let calibrated = display
        .request::<Temperature, Temperature>(
            "lab.calibrate",
            Temperature { celsius: 21.0 },
            Duration::from_secs(5),
        )
        .await?;
    println!(
        "calibration service across the link answered {:.1} °C",
        calibrated.celsius
    );

    display.close().await;
    sensor.close().await;
    Ok(())
}
