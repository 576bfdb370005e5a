//! Fuzz target `packages`: see `packages` in tests/common/fuzzing.rs (reference files read down
//! to their payloads: the Debian package and RPM walks and the payload decompressors).
#![no_main]

#[allow(dead_code)] // each target uses one of the helpers
#[path = "../../tests/common/fuzzing.rs"]
mod fuzzing;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzing::packages(data);
});
