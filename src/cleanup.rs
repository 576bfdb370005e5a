//! What happens when the process ends without returning: the files it must not leave behind and
//! the one line it must still print.
//!
//! - **SIGINT, SIGTERM, SIGHUP**: diff's temporary patch file is removed, then the signal ends
//!   the process as it would have (so the shell sees the usual status). Apply's partial file
//!   stays: `apply --resume` continues it.
//! - **SIGBUS on a mapped input** (OLD or NEW truncated while a diff reads it through its
//!   mapping): one line naming the file, every registered file removed, exit status 3.
//! - **Out of memory** ([`out_of_memory`], called by the CLI's allocator when an allocation
//!   fails): one line, every registered file removed, exit status 3.
//! - **A panic in code not written for hostile input** ([`contained`]: preflate-rs on a gzip
//!   stream): caught and reported by its caller in one line; the hook [`install`] sets keeps
//!   the panic's own message quiet.
//! - **SIGKILL, a power cut**: nothing runs. Diff's patch is an unnamed file until it is
//!   complete (`O_TMPFILE`), so nothing is left; apply's partial file stays for `--resume`.
//!
//! The handlers run in signal context, so they only read what was prepared beforehand (paths as
//! C strings, messages as bytes) and only call async-signal-safe functions (`unlink`, `write`,
//! `_exit`, `raise`). Registrations live in fixed tables of atomic pointers; an entry is never
//! freed (a handler on another thread may be reading it), only marked inactive: a few dozen
//! bytes per file written, for the life of the process.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Exit status of a process ended by [`out_of_memory`] or by a mapped input that shrank: the
/// CLI's status for I/O and resource failures.
pub const EXIT_RESOURCE: i32 = 3;

struct FileEntry {
    path: CString,
    /// Removed on SIGINT/SIGTERM/SIGHUP too (diff's temporary file), not only on fatal errors.
    on_signal: bool,
    active: AtomicBool,
}

struct MapEntry {
    start: AtomicUsize,
    end: AtomicUsize,
    message: Box<[u8]>,
}

const SLOTS: usize = 64;

static FILES: [AtomicPtr<FileEntry>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];
static MAPS: [AtomicPtr<MapEntry>; SLOTS] = [const { AtomicPtr::new(ptr::null_mut()) }; SLOTS];
/// Set by the first thread that ends the process with a message (a shrunk input, a failed
/// allocation).
static ENDING: AtomicBool = AtomicBool::new(false);

/// Lets one thread end the process with its message: when several hit the same shrunk input or
/// run out of memory at once, the later ones wait here for the first one's `_exit` instead of
/// printing the line again.
fn end_once() {
    if ENDING.swap(true, Ordering::AcqRel) {
        loop {
            // SAFETY: pause is async-signal-safe; the first thread's _exit ends this one too.
            unsafe { libc::pause() };
        }
    }
}

/// Puts `entry` into a free slot of `table` (leaked: see the module doc). `None` when the table
/// is full, which only a caller with more than [`SLOTS`] files in flight at once could reach.
fn publish<T>(table: &'static [AtomicPtr<T>; SLOTS], entry: T) -> Option<&'static T> {
    let raw = Box::into_raw(Box::new(entry));
    for slot in table {
        if slot
            .compare_exchange(ptr::null_mut(), raw, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: `raw` came from Box::into_raw above and is never freed.
            return Some(unsafe { &*raw });
        }
    }
    // SAFETY: not published anywhere, so this is the only pointer to it.
    drop(unsafe { Box::from_raw(raw) });
    None
}

/// A file to remove if the process ends abnormally; dropping it withdraws the request.
pub struct FileGuard(Option<&'static FileEntry>);

impl FileGuard {
    /// Registers `path`. With `on_signal`, SIGINT/SIGTERM/SIGHUP remove it too.
    pub fn new(path: &Path, on_signal: bool) -> FileGuard {
        let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
            return FileGuard(None);
        };
        FileGuard(publish(
            &FILES,
            FileEntry {
                path,
                on_signal,
                active: AtomicBool::new(true),
            },
        ))
    }
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        if let Some(e) = self.0 {
            e.active.store(false, Ordering::Release);
        }
    }
}

/// A mapped input whose pages may vanish (the file truncated under us); dropping it withdraws
/// the registration.
pub struct MapGuard(Option<&'static MapEntry>);

impl MapGuard {
    /// Registers the mapped range `start..start + len` and the line to print if touching it
    /// raises SIGBUS (without the trailing newline).
    pub fn new(start: *const u8, len: usize, message: String) -> MapGuard {
        let mut line = message.into_bytes();
        line.push(b'\n');
        let start = start as usize;
        MapGuard(publish(
            &MAPS,
            MapEntry {
                start: AtomicUsize::new(start),
                end: AtomicUsize::new(start.saturating_add(len)),
                message: line.into_boxed_slice(),
            },
        ))
    }
}

impl Drop for MapGuard {
    fn drop(&mut self) {
        if let Some(e) = self.0 {
            e.start.store(0, Ordering::Release);
            e.end.store(0, Ordering::Release);
        }
    }
}

/// Removes the registered files (only those marked `on_signal`, unless `all`). Async-signal-safe.
fn remove_files(all: bool) {
    for slot in &FILES {
        let p = slot.load(Ordering::Acquire);
        if p.is_null() {
            continue;
        }
        // SAFETY: published entries are never freed.
        let e = unsafe { &*p };
        if e.active.load(Ordering::Acquire) && (all || e.on_signal) {
            // SAFETY: a valid NUL-terminated path; unlink is async-signal-safe.
            unsafe { libc::unlink(e.path.as_ptr()) };
        }
    }
}

/// Writes all of `bytes` to standard error. Async-signal-safe.
fn write_stderr(bytes: &[u8]) {
    let mut at = 0;
    while at < bytes.len() {
        // SAFETY: a valid buffer; write is async-signal-safe.
        let n = unsafe { libc::write(2, bytes[at..].as_ptr().cast(), bytes.len() - at) };
        if n <= 0 {
            return;
        }
        at += n as usize;
    }
}

/// Ends the process after an allocation of `size` bytes failed: one line on standard error,
/// registered files removed, exit status [`EXIT_RESOURCE`]. Allocates nothing.
pub fn out_of_memory(size: usize) -> ! {
    end_once();
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut v = size;
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    write_stderr(b"spindiff: error: out of memory: an allocation of ");
    write_stderr(&digits[at..]);
    write_stderr(
        b" bytes failed (lower --memory or --threads, or raise the limit); nothing was written\n",
    );
    remove_files(true);
    // SAFETY: _exit ends the process without running anything else.
    unsafe { libc::_exit(EXIT_RESOURCE) }
}

extern "C" fn on_terminating_signal(sig: libc::c_int) {
    remove_files(false);
    // SAFETY: signal and raise are async-signal-safe. The signal is blocked while its handler
    // runs, so the raised one is delivered, with the default action, once this returns.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

extern "C" fn on_bus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in &MAPS {
        let p = slot.load(Ordering::Acquire);
        if p.is_null() {
            continue;
        }
        // SAFETY: published entries are never freed.
        let e = unsafe { &*p };
        if (e.start.load(Ordering::Acquire)..e.end.load(Ordering::Acquire)).contains(&addr) {
            end_once();
            write_stderr(&e.message);
            remove_files(true);
            // SAFETY: _exit ends the process without running anything else.
            unsafe { libc::_exit(EXIT_RESOURCE) };
        }
    }
    // Not one of our mappings: a bug, not a changed file. Die of it as before.
    // SAFETY: as in on_terminating_signal.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

thread_local! {
    /// Whether this thread is inside [`contained`].
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, a call into code not written for hostile input (preflate-rs, on a gzip stream of
/// an image or a recipe of a patch), and gives `None` if it panics: the caller reports that as
/// a stream it cannot read or a corrupt patch, in one line. Under the hook [`install`] sets,
/// such a panic prints nothing.
pub fn contained<T>(f: impl FnOnce() -> T) -> Option<T> {
    let outer = CONTAINED.replace(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.set(outer);
    result.ok()
}

/// Installs the handlers described in the module doc (the CLI calls this once at start; a
/// library caller that wants the same guarantees may too), and a panic hook that keeps quiet
/// about panics [`contained`] catches. Signals that are ignored when the process starts
/// (`nohup`) stay ignored.
pub fn install() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !CONTAINED.get() {
            report(info);
        }
    }));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid "query" argument; the handler installed is
        // async-signal-safe (see above).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, ptr::null(), &mut old);
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_terminating_signal as *const () as usize;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, ptr::null_mut());
        }
    }
    // SAFETY: as above; SA_SIGINFO gives the handler the faulting address.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_bus as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(libc::SIGBUS, &act, ptr::null_mut());
    }
}
