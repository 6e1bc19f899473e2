//! Pseudo-random generation: seeds from the OS CSPRNG, expanded with AES-128 in
//! counter mode (AES-NI when the CPU has it). Two parties holding the same seed
//! expand the same stream, which is how shares are seed-compressed.

use crate::R64;
use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;
use rayon::prelude::*;

/// A 128-bit PRG seed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub [u8; 16]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)") // never print key material
    }
}

impl Seed {
    /// A fresh seed from the operating system's CSPRNG.
    pub fn random() -> Seed {
        let mut s = [0u8; 16];
        getrandom::getrandom(&mut s).expect("the OS random number generator failed");
        Seed(s)
    }
}

/// AES-128-CTR keystream generator.
#[derive(Clone)]
pub struct Prg {
    cipher: Aes128,
    counter: u128,
}

impl std::fmt::Debug for Prg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prg {{ counter: {} }}", self.counter)
    }
}

/// Blocks per parallel work item: large enough to amortise scheduling, small enough to spread.
const BLOCKS_PER_TASK: usize = 1 << 12;

impl Prg {
    pub fn new(seed: Seed) -> Prg {
        Prg { cipher: Aes128::new(GenericArray::from_slice(&seed.0)), counter: 0 }
    }

    /// A PRG seeded from the OS CSPRNG.
    pub fn from_entropy() -> Prg {
        Prg::new(Seed::random())
    }

    /// Fills `out` with keystream bytes; successive calls continue the stream.
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        let blocks = out.len().div_ceil(16);
        let start = self.counter;
        self.counter += blocks as u128;
        let cipher = &self.cipher;
        let work = |(task, chunk): (usize, &mut [u8])| {
            let mut buf = [GenericArray::default(); 8];
            let first = start + (task * BLOCKS_PER_TASK) as u128;
            for (i, piece) in chunk.chunks_mut(16 * 8).enumerate() {
                let nb = piece.len().div_ceil(16);
                for (j, b) in buf.iter_mut().enumerate().take(nb) {
                    *b = GenericArray::from((first + (i * 8 + j) as u128).to_le_bytes());
                }
                cipher.encrypt_blocks(&mut buf[..nb]);
                for (j, dst) in piece.chunks_mut(16).enumerate() {
                    dst.copy_from_slice(&buf[j][..dst.len()]);
                }
            }
        };
        let task_bytes = 16 * BLOCKS_PER_TASK;
        if out.len() <= task_bytes {
            work((0, out));
        } else {
            out.par_chunks_mut(task_bytes).enumerate().for_each(work);
        }
    }

    /// Reserves the next `bytes` of the stream (exactly what `fill_bytes` of that many
    /// bytes would consume) as a [`PrgRange`] that can be expanded piecewise, in any order.
    pub fn reserve(&mut self, bytes: usize) -> PrgRange {
        let start = self.counter;
        self.counter += bytes.div_ceil(16) as u128;
        PrgRange { cipher: self.cipher.clone(), start, bytes }
    }

    pub fn fill(&mut self, out: &mut [R64]) {
        self.fill_bytes(bytemuck::cast_slice_mut(out));
    }

    pub fn ring_vec(&mut self, len: usize) -> Vec<R64> {
        // zeroed_vec maps fresh zero pages instead of writing every element twice.
        let mut v: Vec<R64> = bytemuck::zeroed_vec(len);
        self.fill(&mut v);
        v
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    /// Derives an independent seed from this stream.
    pub fn next_seed(&mut self) -> Seed {
        let mut s = [0u8; 16];
        self.fill_bytes(&mut s);
        Seed(s)
    }
}

/// A reserved stretch of a [`Prg`] stream, expandable piece by piece (e.g. one
/// cache-sized chunk at a time, on many threads) instead of all at once.
#[derive(Clone)]
pub struct PrgRange {
    cipher: Aes128,
    start: u128,
    bytes: usize,
}

impl std::fmt::Debug for PrgRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrgRange {{ start: {}, bytes: {} }}", self.start, self.bytes)
    }
}

impl PrgRange {
    /// Fills `out` with the range's elements `[first, first + out.len())`.
    /// `first` must be even (elements come two per AES block).
    pub fn fill_at(&self, first: usize, out: &mut [R64]) {
        assert!(first.is_multiple_of(2), "PrgRange::fill_at needs an even start");
        assert!((first + out.len()) * 8 <= self.bytes, "PrgRange::fill_at past the reserved range");
        let mut buf = [GenericArray::default(); 8];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
        let block0 = self.start + (first / 2) as u128;
        for (i, piece) in bytes.chunks_mut(16 * 8).enumerate() {
            let nb = piece.len().div_ceil(16);
            for (j, b) in buf.iter_mut().enumerate().take(nb) {
                *b = GenericArray::from((block0 + (i * 8 + j) as u128).to_le_bytes());
            }
            self.cipher.encrypt_blocks(&mut buf[..nb]);
            for (j, dst) in piece.chunks_mut(16).enumerate() {
                dst.copy_from_slice(&buf[j][..dst.len()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_regardless_of_chunking() {
        let seed = Seed([7; 16]);
        let mut a = Prg::new(seed);
        let whole = a.ring_vec(100_003);
        let mut b = Prg::new(seed);
        let mut parts = b.ring_vec(5);
        parts.extend(b.ring_vec(100_003 - 5));
        // Chunked draws consume whole blocks, so only the first draw lines up exactly.
        assert_eq!(whole[..5], parts[..5]);
        let mut c = Prg::new(seed);
        assert_eq!(c.ring_vec(100_003), whole);
    }

    #[test]
    fn reserved_ranges_expand_like_the_stream() {
        let seed = Seed([9; 16]);
        let mut a = Prg::new(seed);
        let (x, y) = (a.ring_vec(1001), a.ring_vec(77));
        let mut b = Prg::new(seed);
        let (rx, ry) = (b.reserve(1001 * 8), b.reserve(77 * 8));
        let mut got = vec![R64::ZERO; 1001];
        rx.fill_at(0, &mut got[..500]);
        rx.fill_at(500, &mut got[500..]);
        assert_eq!(got, x);
        let mut got_y = vec![R64::ZERO; 77];
        ry.fill_at(0, &mut got_y);
        assert_eq!(got_y, y);
        assert_eq!(a.next_u64(), b.next_u64(), "both streams continue at the same place");
    }

    #[test]
    fn different_seeds_differ_and_bits_are_balanced() {
        let v = Prg::new(Seed([1; 16])).ring_vec(4096);
        let w = Prg::new(Seed([2; 16])).ring_vec(4096);
        assert_ne!(v, w);
        let ones: u32 = v.iter().map(|x| x.0.count_ones()).sum();
        let frac = ones as f64 / (4096.0 * 64.0);
        assert!((frac - 0.5).abs() < 0.01, "bit balance {frac}");
    }
}
