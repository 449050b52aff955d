//! A SHA-256 whose state can be saved and restored.
//!
//! The whole-file hash is computed in the same pass that reads chunks for
//! upload. Saving its state with each chunk acknowledgement means a resumed
//! job continues hashing where it stopped instead of reading the part of the
//! file that is already uploaded. `sha2` does not expose its state, so this
//! keeps the eight state words itself and lets `sha2::compress256` (which
//! uses the CPU's SHA instructions where present) do the work.

use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;

type Block = GenericArray<u8, U64>;

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(Clone)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes already compressed into `state` (a multiple of 64).
    compressed: u64,
    pending: Vec<u8>,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl ResumableSha256 {
    pub fn new() -> Self {
        ResumableSha256 {
            state: H0,
            compressed: 0,
            pending: Vec::with_capacity(64),
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.compressed + self.pending.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block = Block::clone_from_slice(&self.pending);
            sha2::compress256(&mut self.state, std::slice::from_ref(&block));
            self.compressed += 64;
            self.pending.clear();
        }
        let whole = data.len() / 64 * 64;
        // `from_slice` views each block in place; building owned blocks
        // (`clone_from_slice`) went byte by byte and cost more than the hash.
        for block in data[..whole].chunks_exact(64) {
            sha2::compress256(
                &mut self.state,
                std::slice::from_ref(Block::from_slice(block)),
            );
        }
        self.compressed += whole as u64;
        self.pending.extend_from_slice(&data[whole..]);
    }

    /// The digest, as lowercase hex.
    pub fn finalize_hex(mut self) -> String {
        let bits = self.len().wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.pending);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        let blocks: Vec<Block> = tail.chunks_exact(64).map(Block::clone_from_slice).collect();
        sha2::compress256(&mut self.state, &blocks);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        hex::encode(out)
    }

    /// The state as bytes: 32 bytes of state words, 8 of length, then the
    /// pending (not yet compressed) bytes.
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.pending.len());
        for w in self.state {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(&self.compressed.to_be_bytes());
        out.extend_from_slice(&self.pending);
        out
    }

    /// Restores a state made by [`save`](Self::save); `None` if it is not one.
    pub fn restore(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 40 || bytes.len() >= 40 + 64 {
            return None;
        }
        let mut state = [0u32; 8];
        for (s, b) in state.iter_mut().zip(bytes[..32].chunks_exact(4)) {
            *s = u32::from_be_bytes(b.try_into().ok()?);
        }
        let compressed = u64::from_be_bytes(bytes[32..40].try_into().ok()?);
        if compressed % 64 != 0 {
            return None;
        }
        Some(ResumableSha256 {
            state,
            compressed,
            pending: bytes[40..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn equals_sha2_for_any_length_and_split() {
        for n in [
            0usize,
            1,
            55,
            56,
            63,
            64,
            65,
            119,
            128,
            1000,
            65 * 1024 + 3,
            200_000,
        ] {
            let d = data(n);
            let want = hex::encode(Sha256::digest(&d));
            for split in [0, 1, n / 3, n.saturating_sub(1), n] {
                let split = split.min(n);
                let mut h = ResumableSha256::new();
                h.update(&d[..split]);
                h.update(&d[split..]);
                assert_eq!(h.len(), n as u64);
                assert_eq!(h.finalize_hex(), want, "n={n} split={split}");
            }
        }
    }

    #[test]
    fn save_and_restore_continue_the_same_hash() {
        let d = data(100_003);
        let want = hex::encode(Sha256::digest(&d));
        for split in [0usize, 64, 1000, 4097, 100_000] {
            let mut h = ResumableSha256::new();
            h.update(&d[..split]);
            let mut r = ResumableSha256::restore(&h.save()).unwrap();
            r.update(&d[split..]);
            assert_eq!(r.finalize_hex(), want, "split={split}");
        }
        assert!(ResumableSha256::restore(b"short").is_none());
    }
}
