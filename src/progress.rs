//! Progress reporting hooks. The library only counts bytes; the CLI draws bars.

/// Receives progress of a long operation. Implementations must be cheap and thread-safe.
pub trait Progress: Sync {
    /// A phase starts; `total` bytes will be reported through [`Progress::advance`].
    fn start(&self, _phase: &str, _total: u64) {}
    /// `bytes` more bytes of the current phase are done.
    fn advance(&self, _bytes: u64) {}
    /// The current phase is over.
    fn finish(&self) {}
    /// A many-targets diff ([`crate::diff_many`]) starts its target `index` (from 0): the
    /// phases that follow are that target's. A target before it may still be coding its last
    /// streams then; it reports nothing more.
    fn begin_target(&self, _index: usize) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
