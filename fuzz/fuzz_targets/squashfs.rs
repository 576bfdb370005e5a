//! Fuzz target `squashfs`: see `squashfs` in tests/common/fuzzing.rs (the transform layer's
//! ISO 9660 walk, sector scan, cpio walk, squashfs, EROFS and xz stream readers and block
//! decompressors).
#![no_main]

#[allow(dead_code)] // each target uses one of the helpers
#[path = "../../tests/common/fuzzing.rs"]
mod fuzzing;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    fuzzing::squashfs(data);
});
