//! The example city-gate station served by the simulator on 127.0.0.1 free
//! ports, with the daemon's config pointed at it: the start of most
//! end-to-end tests.

use gaswatch::config::Config;
use gaswatch_sim::{Endpoint, SimHandle, SimOptions, Station};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The station every end-to-end test polls (`config/city-gate.toml`).
pub const CITY_GATE: &str = include_str!("../../config/city-gate.toml");

/// Starts the simulated city gate and returns its handles with the parsed
/// config, every device pointed at its simulator port and polled every `poll`.
pub async fn city_gate(poll: Duration) -> (BTreeMap<Endpoint, SimHandle>, Config) {
    let station = Station::from_config_str(CITY_GATE, &SimOptions::default()).expect("station");
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let handles = gaswatch_sim::serve_all(station, |_| any)
        .await
        .expect("serve");
    let mut c = Config::from_str_named(CITY_GATE, Path::new("city-gate.toml")).expect("config");
    for d in &mut c.devices {
        let h = handles
            .iter()
            .find(|(ep, _)| ep.port == d.port)
            .map(|(_, h)| h)
            .expect("endpoint");
        d.port = h.local_addr().port();
        d.poll_interval = poll;
    }
    (handles, c)
}
