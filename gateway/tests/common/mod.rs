//! Helpers shared by the binary's integration tests.

use std::net::TcpListener;

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The default configuration on a free loopback port with its data in `dir`.
#[allow(dead_code)] // not every test binary starts an in-process gateway
pub fn local_config(dir: &std::path::Path) -> capgate_gateway::Config {
    let mut config = capgate_gateway::Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.http_listen = Some("127.0.0.1:0".parse().unwrap());
    config.server.data_dir = dir.to_owned();
    config
}
