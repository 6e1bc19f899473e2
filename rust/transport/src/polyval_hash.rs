//! POLYVAL, the universal hash of the per-frame MAC ([`crate::frame::FrameMac`]).
//!
//! POLYVAL (RFC 8452 §3; Gueron, Langley and Lindell, "AES-GCM-SIV", 2017) evaluates
//! `S_j = (S_{j-1} ⊕ X_j) • H` over GF(2^128) with `a • b = a·b·x^-128 mod
//! x^128 + x^127 + x^126 + x^121 + 1`, on 16-byte little-endian blocks. Because `•` is
//! bilinear, `m` blocks fold into `S` with one reduction:
//! `S_m = reduce(Σ_j clmul(Y_j, P_{m-j+1}))`, `Y_1 = S ⊕ X_1`, `Y_j = X_j`, where
//! `P_k = H^k x^{-128(k-1)}` are the key's "dot powers" (`P_1 = H`, `P_k = P_{k-1} • H`)
//! and `reduce` is the (linear) multiplication by `x^-128`. That is how the fast paths
//! reach memory speed: [`CHUNK`] blocks per reduction, their carry-less products
//! independent of each other.
//!
//! Paths, chosen once per key at run time:
//! * `vpclmulqdq`: AVX-512F + VPCLMULQDQ (Ice Lake, Sapphire Rapids, Zen 4), four blocks
//!   per 512-bit product, three products per block (Karatsuba), [`CHUNK`] (32) blocks per
//!   reduction, the reduction itself on vector registers;
//! * `pclmulqdq`: one block per 128-bit product (every x86-64 since 2010), 32 per reduction;
//! * `portable`: the RustCrypto `polyval` crate (constant-time software, or ARMv8 PMULL).
//!
//! Each fast path is checked bit for bit against the `polyval` crate and RFC 8452's test
//! vectors (tests below). Nothing here branches or indexes on secret data.

use polyval::universal_hash::{KeyInit, UniversalHash};

/// Bytes per block.
pub const BLOCK: usize = 16;
/// Blocks folded per reduction by the fast paths (the dot powers kept per key). With the
/// reduction on vector registers, 32 measured faster than 64 on Sapphire Rapids: the
/// wide path's 16 power registers stay in registers instead of being reloaded.
const CHUNK: usize = 32;

/// One POLYVAL key: `H` and, for the fast paths, its first [`CHUNK`] dot powers.
#[derive(Clone)]
pub struct PolyvalKey {
    h: [u8; BLOCK],
    path: Path,
    /// `powers[k - 1] = P_k`; empty on the portable path.
    powers: Vec<u128>,
    /// Karatsuba sums of the powers in the order the wide path's lanes use them:
    /// `kar[j]` holds `lo ⊕ hi` of `P_{CHUNK - j}` in both halves; empty unless wide.
    kar: Vec<u128>,
}

impl std::fmt::Debug for PolyvalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PolyvalKey({})", self.path.name()) // never the key itself
    }
}

/// Which implementation a key runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// AVX-512F + VPCLMULQDQ.
    Vpclmulqdq,
    /// PCLMULQDQ on 128-bit vectors.
    Pclmulqdq,
    /// The `polyval` crate.
    Portable,
}

impl Path {
    /// The fastest path this CPU runs.
    pub fn best() -> Path {
        #[cfg(target_arch = "x86_64")]
        {
            if !is_x86_feature_detected!("pclmulqdq") || !is_x86_feature_detected!("sse2") {
                return Path::Portable;
            }
            // `is_x86_feature_detected!("avx512f")` also checks that the OS saves zmm state.
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("vpclmulqdq") {
                return Path::Vpclmulqdq;
            }
            Path::Pclmulqdq
        }
        #[cfg(not(target_arch = "x86_64"))]
        Path::Portable
    }

    /// Every path this CPU can run, fastest first (for tests and benchmarks).
    pub fn available() -> Vec<Path> {
        let best = Path::best();
        [Path::Vpclmulqdq, Path::Pclmulqdq, Path::Portable]
            .into_iter()
            .filter(|p| match best {
                Path::Vpclmulqdq => true,
                Path::Pclmulqdq => *p != Path::Vpclmulqdq,
                Path::Portable => *p == Path::Portable,
            })
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Path::Vpclmulqdq => "vpclmulqdq",
            Path::Pclmulqdq => "pclmulqdq",
            Path::Portable => "portable",
        }
    }
}

impl PolyvalKey {
    /// The key `h` on the fastest path of this CPU.
    pub fn new(h: [u8; BLOCK]) -> Self {
        Self::with_path(h, Path::best())
    }

    /// The key `h` on `path`, which must be in [`Path::available`] (else the portable path).
    pub fn with_path(h: [u8; BLOCK], path: Path) -> Self {
        let path = if Path::available().contains(&path) { path } else { Path::Portable };
        let mut powers = Vec::new();
        #[cfg(target_arch = "x86_64")]
        if path != Path::Portable {
            let hv = u128::from_le_bytes(h);
            powers.push(hv);
            for k in 1..CHUNK {
                // SAFETY: the fast paths are only chosen on CPUs with pclmulqdq and sse2.
                powers.push(unsafe { x86::dot(powers[k - 1], hv) });
            }
        }
        let kar = if path == Path::Vpclmulqdq {
            powers
                .iter()
                .rev()
                .map(|&p| {
                    let k = (p as u64 ^ (p >> 64) as u64) as u128;
                    k | k << 64
                })
                .collect()
        } else {
            Vec::new()
        };
        PolyvalKey { h, path, powers, kar }
    }

    pub fn path(&self) -> Path {
        self.path
    }
}

/// A POLYVAL computation in progress: bytes go in with [`Polyval::update`] in pieces of
/// any size (they are hashed as one string); [`Polyval::pad`] zero-fills a partial block.
#[derive(Clone)]
pub struct Polyval {
    state: State,
    buf: [u8; BLOCK],
    buf_len: usize,
}

#[derive(Clone)]
enum State {
    Fast { key: std::sync::Arc<PolyvalKey>, acc: u128 },
    Portable(Box<polyval::Polyval>),
}

impl Polyval {
    pub fn new(key: std::sync::Arc<PolyvalKey>) -> Self {
        let state = if key.path == Path::Portable {
            State::Portable(Box::new(polyval::Polyval::new(&key.h.into())))
        } else {
            State::Fast { key, acc: 0 }
        };
        Polyval { state, buf: [0; BLOCK], buf_len: 0 }
    }

    /// Hashes whole blocks (`data.len()` a multiple of [`BLOCK`]).
    fn blocks(&mut self, data: &[u8]) {
        debug_assert_eq!(data.len() % BLOCK, 0);
        if data.is_empty() {
            return;
        }
        match &mut self.state {
            #[cfg(target_arch = "x86_64")]
            State::Fast { key, acc } => {
                // SAFETY: `key.path` was chosen from the features this CPU has.
                *acc = unsafe { x86::fold(*acc, data, &key.powers, &key.kar, key.path == Path::Vpclmulqdq) };
            }
            #[cfg(not(target_arch = "x86_64"))]
            State::Fast { .. } => unreachable!("fast paths exist on x86-64 only"),
            State::Portable(p) => {
                for b in data.chunks_exact(BLOCK) {
                    p.update(std::slice::from_ref(polyval::Block::from_slice(b)));
                }
            }
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if self.buf_len > 0 {
            let n = (BLOCK - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
            self.buf_len += n;
            data = &data[n..];
            if self.buf_len < BLOCK {
                return;
            }
            let block = self.buf;
            self.blocks(&block);
            self.buf_len = 0;
        }
        let whole = data.len() / BLOCK * BLOCK;
        self.blocks(&data[..whole]);
        let rest = &data[whole..];
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// Completes a partial block with zeros (nothing if the input is block-aligned).
    pub fn pad(&mut self) {
        if self.buf_len > 0 {
            self.buf[self.buf_len..].fill(0);
            let block = self.buf;
            self.blocks(&block);
            self.buf_len = 0;
        }
    }

    /// The hash of everything so far, zero-padded to a whole block.
    pub fn finalize(mut self) -> [u8; BLOCK] {
        self.pad();
        match self.state {
            State::Fast { acc, .. } => acc.to_le_bytes(),
            State::Portable(p) => p.finalize().into(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, CHUNK};
    use std::arch::x86_64::*;

    /// `a • b` (one block, one reduction).
    #[target_feature(enable = "pclmulqdq,sse2")]
    pub(super) fn dot(a: u128, b: u128) -> u128 {
        let (lo, mid, hi) = product(from(a), from(b));
        reduce(to(lo), to(mid), to(hi))
    }

    #[inline(always)]
    fn from(v: u128) -> __m128i {
        // SAFETY: same size, any bit pattern is valid; x86 is little-endian, so the low
        // 64 bits are lane 0, as the RFC's byte order wants.
        unsafe { std::mem::transmute::<u128, __m128i>(v) }
    }

    #[inline(always)]
    fn to(v: __m128i) -> u128 {
        // SAFETY: as in `from`.
        unsafe { std::mem::transmute::<__m128i, u128>(v) }
    }

    /// The unreduced carry-less product `lo ⊕ mid·x^64 ⊕ hi·x^128` (schoolbook: on the
    /// CPUs that matter the multiplier port also runs Karatsuba's shuffles).
    #[inline]
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn product(x: __m128i, h: __m128i) -> (__m128i, __m128i, __m128i) {
        let lo = _mm_clmulepi64_si128::<0x00>(x, h);
        let hi = _mm_clmulepi64_si128::<0x11>(x, h);
        let mid = _mm_xor_si128(_mm_clmulepi64_si128::<0x01>(x, h), _mm_clmulepi64_si128::<0x10>(x, h));
        (lo, mid, hi)
    }

    /// `(lo ⊕ mid·x^64 ⊕ hi·x^128) · x^-128 mod P`: two folds by the low half times
    /// `x^-64` (the shift form of RFC 8452's reduction, as in the `polyval` crate).
    #[inline]
    fn reduce(lo: u128, mid: u128, hi: u128) -> u128 {
        let lo = lo ^ (mid << 64);
        let hi = hi ^ (mid >> 64);
        let (v0, v1, v2, v3) = (lo as u64, (lo >> 64) as u64, hi as u64, (hi >> 64) as u64);
        let v2 = v2 ^ v0 ^ (v0 >> 1) ^ (v0 >> 2) ^ (v0 >> 7);
        let v1 = v1 ^ (v0 << 63) ^ (v0 << 62) ^ (v0 << 57);
        let v3 = v3 ^ v1 ^ (v1 >> 1) ^ (v1 >> 2) ^ (v1 >> 7);
        let v2 = v2 ^ (v1 << 63) ^ (v1 << 62) ^ (v1 << 57);
        ((v3 as u128) << 64) | v2 as u128
    }

    /// Folds `m ≤ CHUNK` blocks into `acc` with one reduction, 128-bit products.
    #[target_feature(enable = "pclmulqdq,sse2")]
    fn fold_xmm(acc: u128, data: &[u8], powers: &[u128]) -> u128 {
        let m = data.len() / BLOCK;
        let (mut lo, mut mid, mut hi) = (_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128());
        for j in 0..m {
            // SAFETY: block j is in `data`.
            let mut x = unsafe { _mm_loadu_si128(data.as_ptr().add(BLOCK * j).cast()) };
            if j == 0 {
                x = _mm_xor_si128(x, from(acc));
            }
            let (l, md, h) = product(x, from(powers[m - 1 - j]));
            lo = _mm_xor_si128(lo, l);
            mid = _mm_xor_si128(mid, md);
            hi = _mm_xor_si128(hi, h);
        }
        reduce(to(lo), to(mid), to(hi))
    }

    /// Folds whole chunks of [`CHUNK`] blocks, 4 blocks per zmm, one reduction per chunk.
    ///
    /// Each block's 128×128-bit product takes three 64×64 carry-less multiplies
    /// (Karatsuba): `lo = x₀p₀`, `hi = x₁p₁`, `(x₀⊕x₁)(p₀⊕p₁)`, whose sum with `lo ⊕ hi` is
    /// the middle term (added once per chunk, not per block). `p₀⊕p₁` is precomputed per
    /// power (`kar`); `x₀⊕x₁` comes from a second load 8 bytes further on (its even
    /// qwords are the blocks' high halves), on the load ports, where a shuffle would take
    /// the multiplier's port (port 5 on Intel) and cancel the saving. The reduction runs
    /// on all four lanes at once ([`reduce_lanes`]), then the lanes are summed: no trip
    /// through general registers. Measured on Sapphire Rapids (docs/BENCHMARKS.md,
    /// "Per-frame MAC"): 1.26–1.28× the schoolbook kernel with a scalar reduction per 64
    /// blocks in cache on a quiet host, 1.02–1.28× under other jobs.
    #[target_feature(enable = "avx512f,vpclmulqdq,pclmulqdq,sse2")]
    fn fold_zmm(acc: u128, data: &[u8], powers: &[u128], kar: &[u128]) -> u128 {
        debug_assert_eq!(data.len() % (CHUNK * BLOCK), 0);
        // Lane i of register r multiplies block 4r + i of a chunk by P_{CHUNK - 4r - i}.
        let p: [__m512i; CHUNK / 4] = core::array::from_fn(|r| {
            let lanes: [u128; 4] = core::array::from_fn(|i| powers[CHUNK - 1 - 4 * r - i]);
            // SAFETY: 64 readable bytes.
            unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
        });
        // The same lanes' p₀ ⊕ p₁ (in both qwords).
        let k: [__m512i; CHUNK / 4] = core::array::from_fn(|r| {
            // SAFETY: `kar` holds CHUNK entries, in lane order.
            unsafe { _mm512_loadu_si512(kar.as_ptr().add(4 * r).cast()) }
        });
        let chunks = data.len() / (CHUNK * BLOCK);
        let mut a = from(acc);
        for n in 0..chunks {
            // SAFETY: chunk n is in `data`.
            let c = unsafe { data.as_ptr().add(n * CHUNK * BLOCK) };
            let last = n + 1 == chunks;
            let (mut lo, mut mid, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512());
            // Register pairs (r, r + 1); the pair holding the running hash goes last, so the
            // previous chunk's reduction has the longest time to finish.
            for q in 0..CHUNK / 8 {
                let r = 2 * ((q + 1) % (CHUNK / 8));
                // SAFETY: bytes 64r..64r+128 of the chunk, and the shifted `s1` 8 bytes past
                // them: the next chunk's first bytes, except for the input's last pair, where
                // the load is masked to the pair's own bytes (masked-off lanes never fault).
                let (x0, x1, s0, s1) = unsafe {
                    let at = c.add(64 * r);
                    let s1 = if last && r + 2 == CHUNK / 4 {
                        _mm512_maskz_loadu_epi64(0x55, at.add(72).cast())
                    } else {
                        _mm512_loadu_si512(at.add(72).cast())
                    };
                    (
                        _mm512_loadu_si512(at.cast()),
                        _mm512_loadu_si512(at.add(64).cast()),
                        _mm512_loadu_si512(at.add(8).cast()),
                        s1,
                    )
                };
                let (x0, t0) = if r == 0 {
                    // The running hash joins block 0: `a` into x, `a₀ ⊕ a₁` into t's qword 0.
                    let az = _mm512_zextsi128_si512(a);
                    let ak = _mm512_zextsi128_si512(_mm_xor_si128(a, _mm_unpackhi_epi64(a, a)));
                    (_mm512_xor_si512(x0, az), _mm512_ternarylogic_epi64::<0x96>(x0, s0, ak))
                } else {
                    (x0, _mm512_xor_si512(x0, s0))
                };
                let t1 = _mm512_xor_si512(x1, s1);
                let (p0, p1, k0, k1) = (p[r], p[r + 1], k[r], k[r + 1]);
                lo = _mm512_ternarylogic_epi64::<0x96>(
                    lo,
                    _mm512_clmulepi64_epi128::<0x00>(x0, p0),
                    _mm512_clmulepi64_epi128::<0x00>(x1, p1),
                );
                hi = _mm512_ternarylogic_epi64::<0x96>(
                    hi,
                    _mm512_clmulepi64_epi128::<0x11>(x0, p0),
                    _mm512_clmulepi64_epi128::<0x11>(x1, p1),
                );
                mid = _mm512_ternarylogic_epi64::<0x96>(
                    mid,
                    _mm512_clmulepi64_epi128::<0x00>(t0, k0),
                    _mm512_clmulepi64_epi128::<0x00>(t1, k1),
                );
            }
            let mid = _mm512_ternarylogic_epi64::<0x96>(mid, lo, hi);
            a = lanes_xor(reduce_lanes(lo, mid, hi));
        }
        to(a)
    }

    /// [`reduce`] on each 128-bit lane: with `c = x^63 + x^62 + x^57` (the `<< 63, 62,
    /// 57` and `>> 1, 2, 7` of [`reduce`] are the two halves of a carry-less product by
    /// `c`), each step folds the low qword `v` into the next two: `clmul(v, c) ⊕ v·x^64`.
    #[inline]
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    fn reduce_lanes(lo: __m512i, mid: __m512i, hi: __m512i) -> __m512i {
        let c = _mm512_set1_epi64(0xc200_0000_0000_0000_u64 as i64);
        // Swapping a lane's qwords puts v at x^64 and the high qword where mid's low one is.
        let mid = _mm512_ternarylogic_epi64::<0x96>(
            mid,
            _mm512_clmulepi64_epi128::<0x00>(lo, c),
            _mm512_shuffle_epi32::<0x4e>(lo),
        );
        _mm512_ternarylogic_epi64::<0x96>(
            hi,
            _mm512_clmulepi64_epi128::<0x00>(mid, c),
            _mm512_shuffle_epi32::<0x4e>(mid),
        )
    }

    /// The XOR of a zmm's four 128-bit lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lanes_xor(v: __m512i) -> __m128i {
        let a = _mm256_xor_si256(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
        _mm_xor_si128(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a))
    }

    /// Folds whole blocks into `acc`. Safety: the CPU has pclmulqdq and sse2, and with
    /// `wide` also AVX-512F and VPCLMULQDQ; `powers` holds `CHUNK` dot powers and `kar`
    /// their Karatsuba sums (see [`super::PolyvalKey`]).
    pub(super) unsafe fn fold(mut acc: u128, data: &[u8], powers: &[u128], kar: &[u128], wide: bool) -> u128 {
        let mut rest = data;
        if wide {
            let whole = rest.len() / (CHUNK * BLOCK) * (CHUNK * BLOCK);
            // SAFETY: the caller's contract.
            acc = unsafe { fold_zmm(acc, &rest[..whole], powers, kar) };
            rest = &rest[whole..];
        }
        for chunk in rest.chunks(CHUNK * BLOCK) {
            // SAFETY: the caller's contract.
            acc = unsafe { fold_xmm(acc, chunk, powers) };
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn reference(h: [u8; BLOCK], data: &[u8]) -> [u8; BLOCK] {
        let mut p = polyval::Polyval::new(&h.into());
        p.update_padded(data);
        p.finalize().into()
    }

    fn ours(h: [u8; BLOCK], path: Path, pieces: &[&[u8]]) -> [u8; BLOCK] {
        let key = Arc::new(PolyvalKey::with_path(h, path));
        assert_eq!(key.path(), path);
        let mut p = Polyval::new(key);
        for piece in pieces {
            p.update(piece);
        }
        p.finalize()
    }

    #[test]
    fn paths_this_cpu_runs() {
        let paths = Path::available();
        eprintln!("POLYVAL paths on this CPU: {paths:?} (tests below run each of them)");
        assert!(paths.contains(&Path::Portable));
        assert_eq!(paths[0], Path::best());
    }

    /// RFC 8452, Appendix A: POLYVAL(H, X_1, X_2).
    #[test]
    fn rfc8452_vector() {
        let h: [u8; BLOCK] = hex("25629347589242761d31f826ba4b757b").try_into().unwrap();
        let x = hex("4f4f95668c83dfb6401762bb2d01a262d1a24ddd2721d006bbe45f20d3c9f362");
        let want = hex("f7a3b47b846119fae5b7866cf5e5b77e");
        for path in Path::available() {
            assert_eq!(ours(h, path, &[&x]).to_vec(), want, "{path:?}");
        }
    }

    #[test]
    fn edge_inputs_match_the_reference() {
        let ones = [0xffu8; BLOCK];
        let c = CHUNK * BLOCK;
        let sizes =
            [0usize, 1, 15, 16, 17, c - 16, c - 1, c, c + 1, c + 16, 2 * c, 2 * c + 64, 8 * c + 48, 3 * c + 31 * 16];
        for h in [ones, [0u8; BLOCK], {
            let mut a = [0u8; BLOCK];
            a[0] = 1;
            a
        }] {
            for &n in &sizes {
                for fill in [0x00u8, 0xff, 0x5a] {
                    let data = vec![fill; n];
                    let want = reference(h, &data);
                    for path in Path::available() {
                        assert_eq!(ours(h, path, &[&data]), want, "{path:?} n={n} fill={fill:#x}");
                    }
                }
            }
        }
    }

    /// The wide path's shifted loads never read past the input: data that ends where an
    /// unreadable page begins (the last chunk's last load is the masked one).
    #[test]
    fn wide_path_reads_nothing_past_the_input() {
        let page = 4096;
        // SAFETY: a fresh private anonymous mapping of two pages; the second is made
        // unreadable, and only the first is read, through `data`.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            assert_eq!(libc::mprotect(base.cast::<u8>().add(page).cast(), page, libc::PROT_NONE), 0);
            let first = std::slice::from_raw_parts_mut(base.cast::<u8>(), page);
            for (i, b) in first.iter_mut().enumerate() {
                *b = (i * 131 + 7) as u8;
            }
            let h = [0x42u8; BLOCK];
            for len in [CHUNK * BLOCK, 2 * CHUNK * BLOCK, page, page - 16, page - CHUNK * BLOCK - 48] {
                let data = &first[page - len..];
                let want = reference(h, data);
                for path in Path::available() {
                    assert_eq!(ours(h, path, &[data]), want, "{path:?} len={len}");
                }
            }
            libc::munmap(base, 2 * page);
        }
    }

    /// `data` cut at the given positions (in any order), as consecutive pieces.
    fn split<'a>(data: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut prev = 0;
        for c in at.into_iter().chain([data.len()]) {
            pieces.push(&data[prev..c]);
            prev = c;
        }
        pieces
    }

    proptest! {
        /// Longer inputs than below, in pieces: many whole chunks with a tail of any
        /// length, and pieces that start and end inside chunks.
        #[test]
        fn every_path_equals_the_reference_on_long_inputs(h in any::<[u8; BLOCK]>(),
                                                          seed in any::<u8>(),
                                                          len in 0usize..40_000,
                                                          cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4)) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1) ^ seed).collect();
            let want = reference(h, &data);
            let pieces = split(&data, &cuts);
            for path in Path::available() {
                prop_assert_eq!(ours(h, path, &pieces), want, "{:?}", path);
            }
        }

        #[test]
        fn every_path_equals_the_reference(h in any::<[u8; BLOCK]>(),
                                           data in proptest::collection::vec(any::<u8>(), 0..5000),
                                           cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let want = reference(h, &data);
            // The same bytes in arbitrary pieces hash the same.
            let pieces = split(&data, &cuts);
            for path in Path::available() {
                prop_assert_eq!(ours(h, path, &pieces), want, "{:?}", path);
            }
        }
    }
}
