//! Chunk boundaries: chunk `i` covers `[i * chunk_size, min((i+1) * chunk_size, size))`.

/// How a file of `size` bytes splits into chunks of `chunk_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlan {
    /// The file's size in bytes.
    pub size: u64,
    /// Bytes in each chunk (the last may be shorter).
    pub chunk_size: u64,
}

impl ChunkPlan {
    /// The plan for `size` bytes; `chunk_size` must not be 0.
    pub fn new(size: u64, chunk_size: u64) -> Self {
        assert!(
            chunk_size > 0,
            "chunk_size is validated to be at least 1 KiB"
        );
        ChunkPlan { size, chunk_size }
    }

    /// How many chunks there are (0 for an empty file).
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk_size)
    }

    /// Offset and length of chunk `index`.
    pub fn range(&self, index: u64) -> (u64, usize) {
        let offset = index * self.chunk_size;
        let len = self.chunk_size.min(self.size.saturating_sub(offset));
        (offset, len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_file_exactly() {
        for (size, cs) in [
            (1u64, 1024u64),
            (1024, 1024),
            (1025, 1024),
            (10 << 20, 8 << 20),
            (8 << 20, 8 << 20),
        ] {
            let p = ChunkPlan::new(size, cs);
            let mut next = 0;
            for i in 0..p.chunks() {
                let (off, len) = p.range(i);
                assert_eq!(off, next);
                assert!(len > 0 && len as u64 <= cs);
                next += len as u64;
            }
            assert_eq!(next, size, "size {size} chunk {cs}");
        }
        assert_eq!(ChunkPlan::new(0, 1024).chunks(), 0);
        assert_eq!(ChunkPlan::new(2049, 1024).chunks(), 3);
        assert_eq!(ChunkPlan::new(2049, 1024).range(2), (2048, 1));
    }
}
