//! Pseudo-random generation: seeds from the OS CSPRNG, expanded with AES-128 in
//! counter mode (AES-NI when the CPU has it). Two parties holding the same seed
//! expand the same stream, which is how shares are seed-compressed.

use crate::R64;
use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use aes::Aes128;
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

/// AES-128 keyed for counter mode: AES-NI round keys when the CPU has them
/// (detected once, at construction), else the `aes` crate.
#[derive(Clone)]
struct Ctr {
    soft: Aes128,
    #[cfg(target_arch = "x86_64")]
    ni: Option<ni::Keys>,
}

impl Ctr {
    fn new(key: &[u8; 16]) -> Ctr {
        Ctr {
            soft: Aes128::new(GenericArray::from_slice(key)),
            #[cfg(target_arch = "x86_64")]
            ni: ni::Keys::new(key),
        }
    }

    /// Writes the keystream of blocks `ctr, ctr + 1, ..` to `out`, the last block truncated.
    fn keystream(&self, ctr: u128, out: &mut [MaybeUninit<u8>]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(keys) = &self.ni {
            return keys.keystream(ctr, out);
        }
        keystream_soft(&self.soft, ctr, out);
    }
}

/// The AES-CTR implementations of this module, best first: `vaes` (VAES on 512-bit
/// registers, 32 blocks in flight; at the AVX-512 element-wise level, for pieces of 512
/// bytes or more), `aes-ni` (AES-NI, 8 blocks in flight), `portable` (the `aes` crate).
/// Every path gives the same stream.
pub const PATHS: [&str; 3] = ["vaes", "aes-ni", "portable"];

/// The paths of [`PATHS`] this CPU can run, best first.
pub fn available_paths() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut paths = Vec::new();
        if ni::Keys::new(&[0; 16]).is_some() {
            if ni::has_vaes() && crate::simd::Simd::Avx512.supported() {
                paths.push(PATHS[0]);
            }
            paths.push(PATHS[1]);
        }
        paths.push(PATHS[2]);
        paths
    }
    #[cfg(not(target_arch = "x86_64"))]
    vec![PATHS[2]]
}

/// The path that expands large buffers now (the keystream's own rule: VAES needs the
/// AVX-512 element-wise level, so `SYFT_MPC_SIMD=avx2` also moves the PRG to AES-NI).
pub fn path() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if ni::Keys::new(&[0; 16]).is_some() {
        return if ni::vaes_in_use() { PATHS[0] } else { PATHS[1] };
    }
    PATHS[2]
}

/// `bytes` as a keystream destination.
fn as_uninit(bytes: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout, and the keystream only
    // writes initialised bytes, so `bytes` stays initialised.
    unsafe { &mut *(bytes as *mut [u8] as *mut [MaybeUninit<u8>]) }
}

/// Copies `src` into the front of `dst` (which may be uninitialised).
fn write_bytes(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert!(src.len() <= dst.len());
    // SAFETY: both ranges are in bounds (asserted) and cannot overlap (one is borrowed mutably).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len()) };
}

/// The portable path: the `aes` crate, eight blocks at a time.
fn keystream_soft(cipher: &Aes128, ctr: u128, out: &mut [MaybeUninit<u8>]) {
    let mut buf = [GenericArray::default(); 8];
    for (i, piece) in out.chunks_mut(16 * 8).enumerate() {
        let nb = piece.len().div_ceil(16);
        for (j, b) in buf.iter_mut().enumerate().take(nb) {
            *b = GenericArray::from((ctr + (i * 8 + j) as u128).to_le_bytes());
        }
        cipher.encrypt_blocks(&mut buf[..nb]);
        for (j, dst) in piece.chunks_mut(16).enumerate() {
            write_bytes(dst, &buf[j][..dst.len()]);
        }
    }
}

/// AES-128-CTR with AES-NI intrinsics, eight blocks in flight.
#[cfg(target_arch = "x86_64")]
mod ni {
    use core::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Expanded AES-128 round keys; only built where the CPU has AES-NI and SSE2.
    #[derive(Clone, Copy)]
    pub(super) struct Keys([__m128i; 11]);

    impl Keys {
        /// The round keys for `key`, or `None` if the CPU lacks AES-NI.
        pub(super) fn new(key: &[u8; 16]) -> Option<Keys> {
            if is_x86_feature_detected!("aes") && is_x86_feature_detected!("sse2") {
                // SAFETY: both target features of `expand` were just detected.
                Some(Keys(unsafe { expand(key) }))
            } else {
                None
            }
        }

        pub(super) fn keystream(&self, ctr: u128, out: &mut [MaybeUninit<u8>]) {
            if out.len() >= 512 && vaes_in_use() {
                return self.keystream_vaes(ctr, out);
            }
            // SAFETY: a `Keys` is only built by `new`, after detecting aes and sse2.
            unsafe { keystream(&self.0, ctr, out) }
        }

        /// The keystream with VAES (four blocks per 512-bit instruction); the
        /// CPU must have it ([`has_vaes`]), else this panics.
        pub(super) fn keystream_vaes(&self, ctr: u128, out: &mut [MaybeUninit<u8>]) {
            assert!(has_vaes(), "VAES keystream on a CPU without VAES/AVX-512F");
            // SAFETY: a `Keys` is only built after detecting aes and sse2; VAES and
            // AVX-512F were just checked.
            unsafe { keystream_vaes(&self.0, ctr, out) }
        }
    }

    /// Whether the CPU has VAES with 512-bit vectors (AVX-512F).
    pub(super) fn has_vaes() -> bool {
        is_x86_feature_detected!("vaes") && is_x86_feature_detected!("avx512f")
    }

    /// Whether keystreams of 512 bytes or more run on VAES now: the CPU has it and the
    /// element-wise passes run at the AVX-512 level (`SYFT_MPC_SIMD=avx2` turns both off).
    pub(super) fn vaes_in_use() -> bool {
        crate::simd::level() == crate::simd::Simd::Avx512 && has_vaes()
    }

    /// [`keystream`] with VAES: 32 blocks in flight as 8 zmm vectors of 4
    /// blocks, then the AES-NI loop for the last < 512 bytes. Bit-for-bit the
    /// same stream.
    #[target_feature(enable = "aes,sse2,avx512f,vaes")]
    unsafe fn keystream_vaes(rk: &[__m128i; 11], mut ctr: u128, out: &mut [MaybeUninit<u8>]) {
        let k: [__m512i; 11] = core::array::from_fn(|r| _mm512_broadcast_i32x4(rk[r]));
        let full = out.len() / 512 * 512;
        let mut off = 0;
        while off < full {
            let (lo, hi) = (ctr as u64, (ctr >> 64) as u64);
            let mut b = [_mm512_setzero_si512(); 8];
            if lo <= u64::MAX - 31 {
                // 128-bit lane i of vector j holds block ctr + 4j + i as (lo, hi).
                let base = _mm512_set_epi64(hi as i64, 3, hi as i64, 2, hi as i64, 1, hi as i64, 0);
                let base =
                    _mm512_add_epi64(base, _mm512_set_epi64(0, lo as i64, 0, lo as i64, 0, lo as i64, 0, lo as i64));
                for (j, v) in b.iter_mut().enumerate() {
                    let step = 4 * j as i64;
                    *v = _mm512_add_epi64(base, _mm512_set_epi64(0, step, 0, step, 0, step, 0, step));
                }
            } else {
                let blocks: [u128; 32] = core::array::from_fn(|i| ctr.wrapping_add(i as u128));
                for (j, v) in b.iter_mut().enumerate() {
                    // SAFETY: blocks 4j..4j+4 are 64 readable bytes.
                    *v = unsafe { _mm512_loadu_si512(blocks.as_ptr().add(4 * j).cast()) };
                }
            }
            for v in b.iter_mut() {
                *v = _mm512_xor_si512(*v, k[0]);
            }
            for key in &k[1..10] {
                for v in b.iter_mut() {
                    *v = _mm512_aesenc_epi128(*v, *key);
                }
            }
            for (j, v) in b.iter().enumerate() {
                let c = _mm512_aesenclast_epi128(*v, k[10]);
                // SAFETY: off + 512 <= full <= out.len(), so bytes off+64j..off+64j+64 are
                // in bounds; storeu has no alignment requirement.
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(off + 64 * j).cast(), c) };
            }
            off += 512;
            ctr = ctr.wrapping_add(32);
        }
        // SAFETY: aes and sse2 are enabled here.
        unsafe { keystream(rk, ctr, &mut out[full..]) }
    }

    /// One AES-128 key-schedule step (FIPS-197 §5.2), as in Gueron, "Intel Advanced
    /// Encryption Standard (AES) New Instructions Set" (2010): the assist yields
    /// SubWord(RotWord(w3)) ^ rcon, then prefix-XOR the previous round key's words.
    macro_rules! expand_step {
        ($k:expr, $rcon:literal) => {{
            let k = $k;
            let t = _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(k));
            let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
            let k = _mm_xor_si128(k, _mm_slli_si128::<8>(k));
            _mm_xor_si128(k, t)
        }};
    }

    /// The AES-128 key schedule: 11 round keys.
    #[target_feature(enable = "aes,sse2")]
    unsafe fn expand(key: &[u8; 16]) -> [__m128i; 11] {
        let mut rk = [_mm_setzero_si128(); 11];
        // SAFETY: `key` is 16 readable bytes; loadu has no alignment requirement.
        rk[0] = unsafe { _mm_loadu_si128(key.as_ptr().cast()) };
        rk[1] = expand_step!(rk[0], 0x01);
        rk[2] = expand_step!(rk[1], 0x02);
        rk[3] = expand_step!(rk[2], 0x04);
        rk[4] = expand_step!(rk[3], 0x08);
        rk[5] = expand_step!(rk[4], 0x10);
        rk[6] = expand_step!(rk[5], 0x20);
        rk[7] = expand_step!(rk[6], 0x40);
        rk[8] = expand_step!(rk[7], 0x80);
        rk[9] = expand_step!(rk[8], 0x1b);
        rk[10] = expand_step!(rk[9], 0x36);
        rk
    }

    /// Block `i` of `out` gets AES-128(`ctr + i` as little-endian bytes); the last is truncated.
    #[target_feature(enable = "aes,sse2")]
    unsafe fn keystream(rk: &[__m128i; 11], mut ctr: u128, out: &mut [MaybeUninit<u8>]) {
        let mut off = 0;
        while off < out.len() {
            // Little-endian u128 bytes are the lanes (lo, hi) of an x86 vector.
            let (lo, hi) = (ctr as u64, (ctr >> 64) as u64);
            let mut b = [_mm_setzero_si128(); 8];
            if lo <= u64::MAX - 7 {
                let base = _mm_set_epi64x(hi as i64, lo as i64);
                for j in 0..8 {
                    b[j] = _mm_add_epi64(base, _mm_set_epi64x(0, j as i64));
                }
            } else {
                for j in 0..8 {
                    let c = ctr.wrapping_add(j as u128);
                    b[j] = _mm_set_epi64x((c >> 64) as i64, c as i64);
                }
            }
            for j in 0..8 {
                b[j] = _mm_xor_si128(b[j], rk[0]);
            }
            for r in 1..10 {
                for j in 0..8 {
                    b[j] = _mm_aesenc_si128(b[j], rk[r]);
                }
            }
            for j in 0..8 {
                b[j] = _mm_aesenclast_si128(b[j], rk[10]);
            }
            let rest = &mut out[off..];
            if rest.len() >= 128 {
                for j in 0..8 {
                    // SAFETY: `rest` has at least 128 bytes, so bytes 16j..16j+16 are in
                    // bounds; storeu has no alignment requirement.
                    unsafe { _mm_storeu_si128(rest.as_mut_ptr().add(16 * j).cast(), b[j]) };
                }
            } else {
                let mut buf = [0u8; 128];
                for j in 0..8 {
                    // SAFETY: `buf` is 128 bytes, so bytes 16j..16j+16 are in bounds.
                    unsafe { _mm_storeu_si128(buf.as_mut_ptr().add(16 * j).cast(), b[j]) };
                }
                let n = rest.len();
                super::write_bytes(rest, &buf[..n]);
            }
            off += 128;
            ctr = ctr.wrapping_add(8);
        }
    }
}

/// AES-128-CTR keystream generator.
#[derive(Clone)]
pub struct Prg {
    cipher: Ctr,
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
        Prg { cipher: Ctr::new(&seed.0), counter: 0 }
    }

    /// A PRG seeded from the OS CSPRNG.
    pub fn from_entropy() -> Prg {
        Prg::new(Seed::random())
    }

    /// Fills `out` with keystream bytes; successive calls continue the stream.
    pub fn fill_bytes(&mut self, out: &mut [u8]) {
        self.fill_uninit(as_uninit(out));
    }

    /// Writes keystream bytes to every byte of `out` (which need not be initialised).
    fn fill_uninit(&mut self, out: &mut [MaybeUninit<u8>]) {
        let blocks = out.len().div_ceil(16);
        let start = self.counter;
        self.counter += blocks as u128;
        let cipher = &self.cipher;
        // The element-wise kernels' rule (in ring elements): threads only for large buffers
        // and a pool of more than one.
        if !crate::kernels::parallel(out.len() / 8) {
            cipher.keystream(start, out);
        } else {
            out.par_chunks_mut(16 * BLOCKS_PER_TASK).enumerate().for_each(|(task, chunk)| {
                cipher.keystream(start + (task * BLOCKS_PER_TASK) as u128, chunk);
            });
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
        self.vec(len)
    }

    /// `len` values of any plain-data type, straight from the stream (exactly what
    /// `fill_bytes` of their bytes would draw), without first zero-filling the buffer.
    pub fn vec<T: bytemuck::Pod>(&mut self, len: usize) -> Vec<T> {
        let mut v: Vec<T> = Vec::with_capacity(len);
        let bytes = len.checked_mul(std::mem::size_of::<T>()).expect("PRG vector size overflows");
        // SAFETY: the spare capacity holds at least `len` values (`bytes` bytes), viewed as
        // possibly uninitialised bytes.
        let raw = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<MaybeUninit<u8>>(), bytes) };
        self.fill_uninit(raw);
        // SAFETY: `fill_uninit` wrote every byte of the first `len` values, and any bit
        // pattern is a valid `T` (Pod).
        unsafe { v.set_len(len) };
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
    cipher: Ctr,
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
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
        // SAFETY: as in `Prg::fill_bytes`: the keystream only writes initialised bytes.
        self.cipher.keystream(self.start + (first / 2) as u128, unsafe {
            &mut *(bytes as *mut [u8] as *mut [MaybeUninit<u8>])
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names_what_expands_the_stream() {
        use crate::simd::{self, Simd};
        let avail = available_paths();
        assert_eq!(avail.last(), Some(&"portable"));
        assert!(avail
            .windows(2)
            .all(|w| PATHS.iter().position(|p| *p == w[0]) < PATHS.iter().position(|p| *p == w[1])));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(avail.contains(&"aes-ni"), is_x86_feature_detected!("aes"));
        assert_eq!(path(), avail[0], "the default level runs the best path");
        // Below AVX-512 the VAES path is off (the keystream checks the level), and only it.
        if Simd::Avx2.supported() {
            simd::force(Some(Simd::Avx2)).unwrap();
            let below = path();
            simd::force(None).unwrap();
            assert_eq!(below, if avail[0] == "vaes" { "aes-ni" } else { avail[0] });
        }
    }

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
    fn vec_draws_what_fill_bytes_draws() {
        let seed = Seed([9; 16]);
        for len in [0usize, 1, 7, 8, 9, 40_000, 70_001] {
            let (mut a, mut b) = (Prg::new(seed), Prg::new(seed));
            let mut want = vec![0u8; 2 * len];
            a.fill_bytes(&mut want);
            assert_eq!(bytemuck::cast_slice::<u16, u8>(&b.vec::<u16>(len)), want.as_slice(), "{len} u16");
            assert_eq!(a.next_u64(), b.next_u64(), "both streams continue at the same block");
        }
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

    const LENS: [usize; 12] = [0, 1, 7, 15, 16, 17, 127, 128, 129, 4095, 65536 + 3, 1 << 20];

    /// The `aes`-crate keystream from block `ctr`.
    fn soft(seed: Seed, ctr: u128, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        keystream_soft(&Aes128::new(GenericArray::from_slice(&seed.0)), ctr, as_uninit(&mut v));
        v
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn aes_ni_path_matches_the_aes_crate() {
        let seed = Seed([0x5a; 16]);
        let Some(keys) = ni::Keys::new(&seed.0) else {
            eprintln!("no AES-NI on this CPU: fast path not tested");
            return;
        };
        // Includes counters whose low 64 bits carry within a batch of eight.
        for ctr in [0, 1, 3, 7, 8, 1 << 40, u64::MAX as u128 - 3, u64::MAX as u128] {
            for len in LENS {
                let mut fast = vec![0u8; len];
                keys.keystream(ctr, as_uninit(&mut fast));
                assert!(fast == soft(seed, ctr, len), "ctr {ctr} len {len}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vaes_path_matches_the_aes_crate() {
        let seed = Seed([0xa5; 16]);
        let Some(keys) = ni::Keys::new(&seed.0) else {
            eprintln!("no AES-NI on this CPU: VAES path not tested");
            return;
        };
        if !ni::has_vaes() {
            eprintln!("no VAES/AVX-512F on this CPU: VAES path not tested");
            return;
        }
        // Counters whose low 64 bits carry within a batch of 32 blocks, and lengths
        // around the 512-byte batch.
        let ctrs = [0, 1, 5, 31, 32, 1 << 40, u64::MAX as u128 - 31, u64::MAX as u128 - 3, u64::MAX as u128];
        for ctr in ctrs {
            for len in LENS.into_iter().chain([511, 512, 513, 1024 + 17, 3 * 512 + 200]) {
                let mut fast = vec![0u8; len];
                keys.keystream_vaes(ctr, as_uninit(&mut fast));
                assert!(fast == soft(seed, ctr, len), "ctr {ctr} len {len}");
            }
        }
    }

    #[test]
    fn fill_bytes_matches_the_aes_crate_after_odd_draws() {
        let seed = Seed([0x3c; 16]);
        for prior in [0usize, 1, 17, 16 * 3 + 5, 16 * 13] {
            for len in LENS {
                let mut prg = Prg::new(seed);
                let mut skip = vec![0u8; prior];
                prg.fill_bytes(&mut skip);
                let mut got = vec![0u8; len];
                prg.fill_bytes(&mut got);
                let ctr = prior.div_ceil(16) as u128;
                assert!(got == soft(seed, ctr, len), "prior {prior} len {len}");
                assert_eq!(prg.counter, ctr + len.div_ceil(16) as u128);
            }
        }
    }

    #[test]
    fn fill_at_matches_the_aes_crate_at_even_offsets() {
        let seed = Seed([0x17; 16]);
        let mut prg = Prg::new(seed);
        prg.fill_bytes(&mut [0u8; 5 * 16 + 1]); // the range starts at block 6
        let n = 20_000;
        let range = prg.reserve(n * 8);
        for first in [0usize, 2, 14, 16, 18, 1000, 19_998] {
            for len in [0usize, 1, 2, 3, 15, 16, 17, 33, n - first] {
                let len = len.min(n - first);
                let mut got = vec![R64::ZERO; len];
                range.fill_at(first, &mut got);
                let want = soft(seed, 6 + (first / 2) as u128, len * 8);
                assert!(bytemuck::cast_slice::<R64, u8>(&got) == want, "first {first} len {len}");
            }
        }
    }

    #[test]
    fn fips_197_appendix_c1_known_answer() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let pt: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
        let ct = [0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4, 0xc5, 0x5a];
        let ctr = u128::from_le_bytes(pt);
        let mut out = [0u8; 16];
        Ctr::new(&key).keystream(ctr, as_uninit(&mut out));
        assert_eq!(out, ct);
        assert_eq!(soft(Seed(key), ctr, 16), ct);
        #[cfg(target_arch = "x86_64")]
        if let Some(keys) = ni::Keys::new(&key) {
            let mut out = [0u8; 16];
            keys.keystream(ctr, as_uninit(&mut out));
            assert_eq!(out, ct, "AES-NI key schedule");
        }
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
