//! The `spindiff` command (see [`cli`]): parses the command line, runs the command, renders an
//! error as one line with its exit status. Installs the handlers that keep spindiff's promises
//! when the process ends abnormally (signals, a failed allocation: see `spindiff::cleanup`).

mod cli;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// The system allocator, except that a failed allocation ends the process with one line and
/// exit status 3 after removing the files spindiff was writing (see spindiff::cleanup), where
/// Rust's default would abort with a core dump and leave them.
struct Allocator;

// SAFETY: every method forwards to System with the same arguments; only a null result, which
// System reports for a failed allocation, is handled differently (the process ends).
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            spindiff::cleanup::out_of_memory(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            spindiff::cleanup::out_of_memory(layout.size());
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            spindiff::cleanup::out_of_memory(new_size);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

fn main() -> ExitCode {
    spindiff::cleanup::install();
    let started = std::time::Instant::now();
    let cli = match cli::args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && std::env::args_os().any(|a| a == "--json") => {
            // a usage error of a command asked for JSON: the document says so too
            let command = std::env::args()
                .nth(1)
                .filter(|c| ["diff", "batch", "apply", "verify", "inspect"].contains(&c.as_str()))
                .unwrap_or_default();
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let message = first.strip_prefix("error: ").unwrap_or(first);
            cli::json::error(&command, "usage", message, None, 2, started);
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let json = cli.json_command();
    let result = cli::run(cli).and_then(|status| {
        std::io::stdout()
            .flush()
            .map_err(cli::report::stdout_failed)
            .map(|()| status)
    });
    match result {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            let status = cli::exit_status(&e);
            if let Some(command) = json
                && !cli::report::is_closed_stdout(&e)
            {
                cli::json::library_error(command, &e, status, started);
            }
            cli::report::error(&e);
            ExitCode::from(status)
        }
    }
}
