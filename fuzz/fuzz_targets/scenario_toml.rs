//! Scenario files from an untrusted source: parsing never panics, and a scenario that parses
//! expands into runnable cells.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = damper_lab::scenario::parse(text, "fuzz.toml") {
        let cells = damper_lab::scenario::expand(&file, true);
        assert!(!cells.is_empty());
    }
});
