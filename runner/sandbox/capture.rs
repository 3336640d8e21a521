//! Bounded capture of a command's output stream.
//!
//! Owns: keeping the first and last bytes of a stream and counting what fell in between, so a
//! command printing gigabytes costs the runner a fixed amount of memory. Must not: touch files
//! or file descriptors; the reader feeds it chunks.

/// Keeps `cap / 2` bytes from the start and `cap - cap / 2` from the end of a stream.
#[derive(Debug, Clone)]
pub struct Capture {
    head: Vec<u8>,
    head_cap: usize,
    /// A ring buffer of the last bytes; `tail_start` is where the oldest byte sits once full.
    tail: Vec<u8>,
    tail_cap: usize,
    tail_start: usize,
    dropped: u64,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        let head_cap = cap / 2;
        Capture {
            head: Vec::new(),
            head_cap,
            tail: Vec::new(),
            tail_cap: cap - head_cap,
            tail_start: 0,
            dropped: 0,
        }
    }

    pub fn push(&mut self, mut chunk: &[u8]) {
        let room = self.head_cap.saturating_sub(self.head.len());
        if room > 0 {
            let take = room.min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
        }
        if self.tail_cap == 0 {
            self.dropped += chunk.len() as u64;
            return;
        }
        if chunk.len() >= self.tail_cap {
            self.dropped += (self.tail.len() + chunk.len() - self.tail_cap) as u64;
            self.tail.clear();
            self.tail
                .extend_from_slice(&chunk[chunk.len() - self.tail_cap..]);
            self.tail_start = 0;
            return;
        }
        let free = self.tail_cap - self.tail.len();
        let fill = free.min(chunk.len());
        self.tail.extend_from_slice(&chunk[..fill]);
        self.overwrite_oldest(&chunk[fill..]);
    }

    /// Writes over the oldest bytes of a full ring, in at most two copies.
    fn overwrite_oldest(&mut self, mut bytes: &[u8]) {
        self.dropped += bytes.len() as u64;
        while !bytes.is_empty() {
            let n = bytes.len().min(self.tail_cap - self.tail_start);
            self.tail[self.tail_start..self.tail_start + n].copy_from_slice(&bytes[..n]);
            self.tail_start = (self.tail_start + n) % self.tail_cap;
            bytes = &bytes[n..];
        }
    }

    /// Bytes seen but not kept.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The kept bytes as text, with a marker where bytes were dropped.
    pub fn to_text(&self) -> String {
        let mut bytes = self.head.clone();
        if self.dropped > 0 {
            bytes.extend_from_slice(
                format!("\n[... {} bytes dropped by fsm-runner ...]\n", self.dropped).as_bytes(),
            );
        }
        bytes.extend_from_slice(&self.tail[self.tail_start..]);
        bytes.extend_from_slice(&self.tail[..self.tail_start]);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_output_is_kept_whole() {
        let mut c = Capture::new(10);
        c.push(b"abc");
        c.push(b"def");
        assert_eq!(c.to_text(), "abcdef");
        assert_eq!(c.dropped(), 0);
    }

    #[test]
    fn keeps_head_and_tail_and_counts_the_rest() {
        let mut c = Capture::new(6);
        for chunk in [&b"0123"[..], b"4567", b"89"] {
            c.push(chunk);
        }
        assert_eq!(c.dropped(), 4);
        assert_eq!(
            c.to_text(),
            "012\n[... 4 bytes dropped by fsm-runner ...]\n789"
        );
    }

    #[test]
    fn ring_wraps_in_order() {
        let mut c = Capture::new(8);
        for chunk in [&b"abcd"[..], b"123", b"45", b"6789", b"X"] {
            c.push(chunk);
        }
        // head keeps "abcd"; the tail ring keeps the last four bytes.
        assert_eq!(c.dropped(), 6);
        assert_eq!(
            c.to_text(),
            "abcd\n[... 6 bytes dropped by fsm-runner ...]\n789X"
        );
    }

    #[test]
    fn a_huge_chunk_keeps_only_its_end() {
        let mut c = Capture::new(4);
        c.push(&[b'a'; 100]);
        c.push(b"xyz");
        assert_eq!(c.dropped(), 99);
        assert_eq!(
            c.to_text(),
            "aa\n[... 99 bytes dropped by fsm-runner ...]\nyz"
        );
    }
}
