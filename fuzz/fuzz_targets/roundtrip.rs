//! Fuzz target `roundtrip`: see `Scratch::roundtrip` in tests/common/fuzzing.rs.
#![no_main]

#[allow(dead_code)] // each target uses one of the helpers
#[path = "../../tests/common/fuzzing.rs"]
mod fuzzing;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static SCRATCH: OnceLock<fuzzing::Scratch> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let scratch = SCRATCH.get_or_init(|| fuzzing::Scratch::new(include_bytes!("../old.bin")));
    scratch.roundtrip(data);
});
