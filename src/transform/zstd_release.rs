//! libzstd releases besides the one zstd-sys bundles (1.5.7): a zstd block recompresses bit for
//! bit only with the release that made it, and Debian 12's mksquashfs and mkfs.erofs use 1.5.4.
//! `scripts/zstd-releases.sh` builds each release's compressor from the zstd-sys crate that
//! bundles it, its symbols renamed, and build.rs links it when it is there. A zstd codec's
//! encoding variant names the release ([`RELEASES`]): 0 the bundled one, 1 1.5.4. A build
//! without a release cannot make or apply patches whose blocks need it ([`available`]).

/// The release each encoding variant of a zstd codec names, as `ZSTD_versionNumber` gives it.
pub const RELEASES: [u32; 2] = [10507, 10504];

/// Whether this build compresses with the release `variant` names.
pub fn available(variant: u8) -> bool {
    match variant {
        0 => true,
        #[cfg(zstd_1_5_4)]
        // SAFETY: ZSTD_versionNumber takes nothing and returns a constant.
        1 => (unsafe { v1_5_4::spindiff_zstd_1_5_4_ZSTD_versionNumber() }) == RELEASES[1],
        _ => false,
    }
}

/// The releases this build has, as encoding variants (0 first).
pub fn variants() -> u8 {
    (0..RELEASES.len() as u8)
        .take_while(|&v| available(v))
        .count() as u8
}

/// The release `variant` names, for people (`1.5.4`).
pub fn name(variant: u8) -> String {
    RELEASES.get(usize::from(variant)).map_or_else(
        || format!("release {variant}"),
        |v| format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100),
    )
}

/// How a frame is made: `ZSTD_compressCCtx` at a level (mksquashfs), or `ZSTD_compress2` at a
/// level with a window log (mkfs.erofs).
#[derive(Debug, Clone, Copy)]
pub enum Call {
    /// `ZSTD_compressCCtx(cctx, dst, cap, src, len, level)`.
    CompressCctx {
        /// The compression level.
        level: i32,
    },
    /// `ZSTD_compress2` after setting `ZSTD_c_compressionLevel` and `ZSTD_c_windowLog`.
    Compress2 {
        /// The compression level.
        level: i32,
        /// The window log.
        window_log: u32,
    },
}

/// `plain` as one zstd frame made by a pinned release (`variant` 1 or more), into a buffer of
/// `ZSTD_compressBound` bytes; `None` when this build lacks it or the call fails.
pub fn compress(variant: u8, plain: &[u8], call: Call) -> Option<Vec<u8>> {
    if !available(variant) {
        return None;
    }
    match variant {
        #[cfg(zstd_1_5_4)]
        1 => v1_5_4::compress(plain, call),
        _ => {
            let _ = (plain, call);
            None
        }
    }
}

/// A release's streaming compressor (`ZSTD_compressStream2` and what sets it up), for whole
/// streams ([`super::zstdstream::StreamEncoder`]).
pub struct StreamApi {
    /// `ZSTD_createCCtx`.
    pub create: unsafe extern "C" fn() -> *mut c_void,
    /// `ZSTD_freeCCtx`.
    pub free: unsafe extern "C" fn(*mut c_void) -> usize,
    /// `ZSTD_CCtx_setParameter`.
    pub set_parameter: unsafe extern "C" fn(*mut c_void, c_int, c_int) -> usize,
    /// `ZSTD_CCtx_setPledgedSrcSize`.
    pub set_pledged: unsafe extern "C" fn(*mut c_void, u64) -> usize,
    /// `ZSTD_compressStream2`.
    pub compress_stream2:
        unsafe extern "C" fn(*mut c_void, *mut OutBuffer, *mut InBuffer, c_int) -> usize,
    /// `ZSTD_isError`.
    pub is_error: unsafe extern "C" fn(usize) -> c_uint,
}

use std::ffi::{c_int, c_uint, c_void};
use zstd::zstd_safe::zstd_sys::{ZSTD_inBuffer as InBuffer, ZSTD_outBuffer as OutBuffer};

/// Declares a release's streaming functions under its symbols' prefix, and its [`StreamApi`].
macro_rules! stream_api {
    ($api:ident, $module:ident, $create:ident, $free:ident, $set:ident, $pledged:ident, $stream:ident, $is_error:ident) => {
        mod $module {
            use super::{InBuffer, OutBuffer};
            use std::ffi::{c_int, c_uint, c_void};
            unsafe extern "C" {
                pub fn $create() -> *mut c_void;
                pub fn $free(cctx: *mut c_void) -> usize;
                pub fn $set(cctx: *mut c_void, param: c_int, value: c_int) -> usize;
                pub fn $pledged(cctx: *mut c_void, size: u64) -> usize;
                pub fn $stream(
                    cctx: *mut c_void,
                    output: *mut OutBuffer,
                    input: *mut InBuffer,
                    end: c_int,
                ) -> usize;
                pub fn $is_error(code: usize) -> c_uint;
            }
        }
        static $api: StreamApi = StreamApi {
            create: $module::$create,
            free: $module::$free,
            set_parameter: $module::$set,
            set_pledged: $module::$pledged,
            compress_stream2: $module::$stream,
            is_error: $module::$is_error,
        };
    };
}

// the release zstd-sys bundles (its own symbols, declared with plain integers for the enums)
stream_api!(
    BUNDLED,
    bundled,
    ZSTD_createCCtx,
    ZSTD_freeCCtx,
    ZSTD_CCtx_setParameter,
    ZSTD_CCtx_setPledgedSrcSize,
    ZSTD_compressStream2,
    ZSTD_isError
);

#[cfg(zstd_1_5_4)]
stream_api!(
    V1_5_4,
    stream_1_5_4,
    spindiff_zstd_1_5_4_ZSTD_createCCtx,
    spindiff_zstd_1_5_4_ZSTD_freeCCtx,
    spindiff_zstd_1_5_4_ZSTD_CCtx_setParameter,
    spindiff_zstd_1_5_4_ZSTD_CCtx_setPledgedSrcSize,
    spindiff_zstd_1_5_4_ZSTD_compressStream2,
    spindiff_zstd_1_5_4_ZSTD_isError
);

/// The streaming compressor of the release `variant` names, when this build has it.
pub fn stream_api(variant: u8) -> Option<&'static StreamApi> {
    if !available(variant) {
        return None;
    }
    match variant {
        0 => Some(&BUNDLED),
        #[cfg(zstd_1_5_4)]
        1 => Some(&V1_5_4),
        _ => None,
    }
}

/// The zstd context of a pinned release, freed when dropped.
#[cfg(zstd_1_5_4)]
struct Context {
    cctx: *mut std::ffi::c_void,
    free: unsafe extern "C" fn(*mut std::ffi::c_void) -> usize,
}

#[cfg(zstd_1_5_4)]
impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: `cctx` came from the same release's ZSTD_createCCtx and is freed once.
        unsafe { (self.free)(self.cctx) };
    }
}

#[cfg(zstd_1_5_4)]
mod v1_5_4 {
    use super::{Call, Context};
    use std::ffi::{c_int, c_uint, c_void};

    unsafe extern "C" {
        pub fn spindiff_zstd_1_5_4_ZSTD_versionNumber() -> c_uint;
        fn spindiff_zstd_1_5_4_ZSTD_createCCtx() -> *mut c_void;
        fn spindiff_zstd_1_5_4_ZSTD_freeCCtx(cctx: *mut c_void) -> usize;
        fn spindiff_zstd_1_5_4_ZSTD_compressCCtx(
            cctx: *mut c_void,
            dst: *mut c_void,
            cap: usize,
            src: *const c_void,
            len: usize,
            level: c_int,
        ) -> usize;
        fn spindiff_zstd_1_5_4_ZSTD_CCtx_setParameter(
            cctx: *mut c_void,
            param: c_int,
            value: c_int,
        ) -> usize;
        fn spindiff_zstd_1_5_4_ZSTD_compress2(
            cctx: *mut c_void,
            dst: *mut c_void,
            cap: usize,
            src: *const c_void,
            len: usize,
        ) -> usize;
        fn spindiff_zstd_1_5_4_ZSTD_isError(code: usize) -> c_uint;
        fn spindiff_zstd_1_5_4_ZSTD_compressBound(len: usize) -> usize;
    }

    /// `ZSTD_c_compressionLevel` and `ZSTD_c_windowLog` (the same in every release).
    const LEVEL: c_int = 100;
    const WINDOW_LOG: c_int = 101;

    pub fn compress(plain: &[u8], call: Call) -> Option<Vec<u8>> {
        // SAFETY: createCCtx takes nothing; a null result is handled.
        let cctx = unsafe { spindiff_zstd_1_5_4_ZSTD_createCCtx() };
        if cctx.is_null() {
            return None;
        }
        let ctx = Context {
            cctx,
            free: spindiff_zstd_1_5_4_ZSTD_freeCCtx,
        };
        let failed = |code: usize| {
            // SAFETY: isError only inspects the value.
            unsafe { spindiff_zstd_1_5_4_ZSTD_isError(code) != 0 }
        };
        // SAFETY: compressBound only computes a size.
        let mut out = vec![0u8; unsafe { spindiff_zstd_1_5_4_ZSTD_compressBound(plain.len()) }];
        let (dst, cap) = (out.as_mut_ptr().cast(), out.len());
        let (src, len) = (plain.as_ptr().cast(), plain.len());
        // SAFETY: `ctx.cctx` is a live context of this release; the buffers are valid for the
        // lengths given, and the compressor writes at most `cap` bytes.
        let n = unsafe {
            match call {
                Call::CompressCctx { level } => {
                    spindiff_zstd_1_5_4_ZSTD_compressCCtx(ctx.cctx, dst, cap, src, len, level)
                }
                Call::Compress2 { level, window_log } => {
                    for (param, value) in [(LEVEL, level), (WINDOW_LOG, window_log as c_int)] {
                        let r = spindiff_zstd_1_5_4_ZSTD_CCtx_setParameter(ctx.cctx, param, value);
                        if failed(r) {
                            return None;
                        }
                    }
                    spindiff_zstd_1_5_4_ZSTD_compress2(ctx.cctx, dst, cap, src, len)
                }
            }
        };
        if failed(n) {
            return None;
        }
        out.truncate(n);
        Some(out)
    }
}
