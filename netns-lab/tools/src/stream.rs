//! The deterministic pseudo-random byte stream of `skyvine-xfer`, and the FNV-1a hash both
//! ends print. The receiver regenerates the stream from the seed and compares every byte, so a
//! lost, duplicated, reordered or corrupted byte is found at its offset, not just as a hash
//! mismatch.

/// Bytes from splitmix64, eight at a time, little-endian. Any offset can be generated
/// sequentially by `fill`.
#[derive(Debug, Clone)]
pub struct ByteStream {
    state: u64,
    block: [u8; 8],
    used: usize,
}

impl ByteStream {
    pub fn new(seed: u64) -> Self {
        ByteStream {
            state: seed,
            block: [0; 8],
            used: 8,
        }
    }

    fn next_block(&mut self) -> [u8; 8] {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }

    /// Writes the next `out.len()` bytes of the stream into `out`.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut rest = out;
        // Finish a partly used block.
        while self.used < 8 {
            let Some((first, tail)) = rest.split_first_mut() else {
                return;
            };
            *first = self.block.get(self.used).copied().unwrap_or_default();
            self.used += 1;
            rest = tail;
        }
        let mut chunks = rest.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_block());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            self.block = self.next_block();
            for (i, byte) in tail.iter_mut().enumerate() {
                *byte = self.block.get(i).copied().unwrap_or_default();
            }
            self.used = tail.len();
        }
    }

    /// Compares `data` against the next bytes of the stream; returns the index of the first
    /// differing byte. The stream advances by `data.len()` either way.
    pub fn check(&mut self, data: &[u8], scratch: &mut Vec<u8>) -> Option<usize> {
        scratch.resize(data.len(), 0);
        self.fill(scratch);
        if scratch.as_slice() == data {
            return None;
        }
        data.iter().zip(scratch.iter()).position(|(a, b)| a != b)
    }
}

/// 64-bit FNV-1a over everything fed to it.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_independent_of_chunking() {
        let mut whole = vec![0u8; 1000];
        ByteStream::new(7).fill(&mut whole);
        let mut pieces = Vec::new();
        let mut s = ByteStream::new(7);
        for size in [1, 3, 8, 13, 0, 64, 5, 906] {
            let mut buf = vec![0u8; size];
            s.fill(&mut buf);
            pieces.extend_from_slice(&buf);
        }
        assert_eq!(pieces, whole);
        let mut other = vec![0u8; 1000];
        ByteStream::new(8).fill(&mut other);
        assert_ne!(other, whole);
    }

    #[test]
    fn check_finds_the_first_wrong_byte() {
        let mut data = vec![0u8; 300];
        ByteStream::new(1).fill(&mut data);
        let mut scratch = Vec::new();
        let mut s = ByteStream::new(1);
        assert_eq!(s.check(&data[..100], &mut scratch), None);
        data[150] ^= 1;
        assert_eq!(s.check(&data[100..], &mut scratch), Some(50));
    }

    #[test]
    fn fnv_known_values() {
        let mut h = Fnv64::default();
        assert_eq!(h.finish(), 0xcbf2_9ce4_8422_2325);
        h.update(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }
}
