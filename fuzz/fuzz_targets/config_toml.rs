//! Stack configs from an untrusted file: parsing never panics, and whatever parses is either
//! built or rejected with an error naming a field under `client.` or `server.`.
#![no_main]

use damper::config::{ClientConfig, ServerConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = toml::from_str::<ClientConfig>(text) {
        if let Err(e) = damper::ClientStack::new().config(config).build() {
            assert!(e.path().starts_with("client."), "{e}");
        }
    }
    if let Ok(config) = toml::from_str::<ServerConfig>(text) {
        if let Err(e) = damper::ServerStack::new().config(config).build() {
            assert!(e.path().starts_with("server."), "{e}");
        }
    }
});
