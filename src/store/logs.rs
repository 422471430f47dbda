//! What both backends do the same with the rows of a log: gather them into
//! the chunks of one JSON array ([`Store::stream_logs_json`]), and keep the
//! newest within a summary's bounds ([`Store::newest_logs`]).
//!
//! [`Store::stream_logs_json`]: super::Store::stream_logs_json
//! [`Store::newest_logs`]: super::Store::newest_logs

use super::SummaryBounds;

/// Bytes of JSON gathered before a chunk is handed on.
pub(super) const LOG_CHUNK_BYTES: usize = 64 * 1024;

/// Chunks handed on ahead of the reader (each some [`LOG_CHUNK_BYTES`]).
pub(super) const LOG_CHUNKS_AHEAD: usize = 4;

/// A JSON array built element by element and handed on in chunks.
pub(super) struct ChunkedArray {
    buf: Vec<u8>,
    first: bool,
}

impl ChunkedArray {
    pub(super) fn new() -> Self {
        let mut buf = Vec::with_capacity(LOG_CHUNK_BYTES);
        buf.push(b'[');
        Self { buf, first: true }
    }

    /// Adds an element; returns a chunk to hand on once enough is gathered.
    pub(super) fn push(&mut self, element: &[u8]) -> Option<Vec<u8>> {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.extend_from_slice(element);
        (self.buf.len() >= LOG_CHUNK_BYTES)
            .then(|| std::mem::replace(&mut self.buf, Vec::with_capacity(LOG_CHUNK_BYTES)))
    }

    /// The last chunk, closing the array.
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.buf.push(b']');
        self.buf
    }
}

/// The entries a summary gathers, newest first.
pub(super) struct Newest<'a> {
    entries: Vec<String>,
    bytes: usize,
    bounds: &'a SummaryBounds,
}

impl<'a> Newest<'a> {
    pub(super) fn new(bounds: &'a SummaryBounds) -> Self {
        Self {
            entries: Vec::new(),
            bytes: 0,
            bounds,
        }
    }

    /// How many more entries are wanted.
    pub(super) fn wanted(&self) -> usize {
        self.bounds.entries.saturating_sub(self.entries.len())
    }

    /// Adds one (`None`: too large to read, `len` bytes); false when there
    /// is no room for more.
    pub(super) fn add(&mut self, entry: Option<String>, len: i64) -> bool {
        let entry = entry.unwrap_or_else(|| {
            serde_json::Value::String(format!(
                "(a log entry of {len} bytes, too large for a summary)"
            ))
            .to_string()
        });
        if self.bytes + entry.len() > self.bounds.total_bytes && !self.entries.is_empty() {
            return false;
        }
        self.bytes += entry.len();
        self.entries.push(entry);
        self.entries.len() < self.bounds.entries && self.bytes < self.bounds.total_bytes
    }

    /// The entries, oldest first.
    pub(super) fn oldest_first(self) -> Vec<String> {
        let mut entries = self.entries;
        entries.reverse();
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_join_into_one_json_array() {
        let mut a = ChunkedArray::new();
        let mut out = Vec::new();
        let big = vec![b'1'; LOG_CHUNK_BYTES];
        for e in [&b"1"[..], &big, b"2"] {
            if let Some(chunk) = a.push(e) {
                out.extend(chunk);
            }
        }
        out.extend(a.finish());
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(ChunkedArray::new().finish(), b"[]");
    }

    #[test]
    fn a_summary_stops_at_its_bounds_and_keeps_at_least_one_entry() {
        let bounds = SummaryBounds {
            entries: 3,
            total_bytes: 10,
            entry_bytes: 100,
        };
        let mut n = Newest::new(&bounds);
        assert!(n.add(Some("\"abc\"".into()), 5));
        assert!(!n.add(Some("\"defgh\"".into()), 7), "over 10 bytes");
        assert_eq!(n.oldest_first(), ["\"abc\""]);
        let mut n = Newest::new(&bounds);
        assert!(!n.add(Some("\"a very long entry\"".into()), 20));
        assert_eq!(n.oldest_first().len(), 1, "one entry however large");
        let mut n = Newest::new(&bounds);
        n.add(None, 1_000_000);
        assert_eq!(
            n.oldest_first(),
            ["\"(a log entry of 1000000 bytes, too large for a summary)\""]
        );
    }
}
