//! The settings file (`--config`): any text through its parser, and what it accepts through the
//! settings the daemon would run with.
#![no_main]

use enforcer::settings::{ConfigFile, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = ConfigFile::parse(text) else {
        return;
    };
    let _ = Settings::from_options(file.options, file.socket);
});
