//! A router configured from TOML plus `DNDM_*` overrides uses those settings; invalid values are
//! rejected naming the field, even in disabled sections.

#![allow(clippy::unwrap_used)]

use dndm::Overflow;
use dndm_cli::Config;
use dndm_cli::config::router_builder;
use dndm_test_support::Reading as Probe;

const TOML: &str = r#"
[node]
name = "robot-7"

[router]
queue_capacity = 32
overflow = "drop_newest"
"#;

#[tokio::test]
async fn toml_and_env_overrides_configure_the_router() {
    let config = Config::from_toml_str(TOML)
        .unwrap()
        .with_env_overrides([
            ("DNDM_ROUTER__QUEUE_CAPACITY", "8"),
            ("DNDM_NODE__NAME", "robot-8"),
        ])
        .unwrap();
    let router = router_builder(&config).build().unwrap();
    assert_eq!(router.name(), "robot-8");
    let sub = router.subscribe::<Probe>("p").unwrap();
    let stats = sub.stats();
    assert_eq!((stats.capacity, stats.overflow), (8, Overflow::DropNewest));
    router.close().await;
}

#[test]
fn invalid_value_in_a_disabled_section_is_rejected_naming_the_field() {
    let err = Config::from_toml_str("[mesh]\nenabled = false\nmax_peers = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mesh.max_peers = 0"), "{err}");
    let err = Config::default()
        .with_env_overrides([("DNDM_REMOTE__KEEPALIVE_MS", "0")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("remote.keepalive_ms"), "{err}");
}
