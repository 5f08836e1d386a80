//! The config file: any text is parsed (TOML → Config) and, when it parses, validated, without
//! a panic; a config that parses prints its `Debug` (what `check-config` shows).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate::config::Config;

fuzz_target!(|text: &str| {
    if let Ok(config) = Config::from_toml(text) {
        let _ = config.validate();
        assert!(!format!("{config:?}").is_empty());
    }
});
