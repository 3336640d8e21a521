//! Bounded capture of a command's output stream.
//!
//! Owns: keeping the first and last bytes of a stream and counting what fell in between, so a
//! command printing gigabytes costs the runner a fixed amount of memory. Must not: touch files
//! or file descriptors; the reader feeds it chunks.

use std::collections::VecDeque;

/// Keeps `cap / 2` bytes from the start and `cap - cap / 2` from the end of a stream.
#[derive(Debug, Clone)]
pub struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    head_cap: usize,
    tail_cap: usize,
    dropped: u64,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        let head_cap = cap / 2;
        Capture {
            head: Vec::new(),
            tail: VecDeque::new(),
            head_cap,
            tail_cap: cap - head_cap,
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
        if chunk.len() >= self.tail_cap {
            self.dropped += (self.tail.len() + chunk.len() - self.tail_cap) as u64;
            self.tail.clear();
            self.tail.extend(&chunk[chunk.len() - self.tail_cap..]);
            return;
        }
        let overflow = (self.tail.len() + chunk.len()).saturating_sub(self.tail_cap);
        self.tail.drain(..overflow);
        self.dropped += overflow as u64;
        self.tail.extend(chunk);
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
        bytes.extend(self.tail.iter());
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
