//! Comparison with zero and ReLU in 6 rounds, ≈14 bytes per element per peer.
//!
//! `msb(x)` (the sign in two's complement) is computed from a masked opening
//! `c = x + r`: writing `c_l, r_l` for the low 63 bits,
//! `msb(x) = msb(c) ⊕ msb(r) ⊕ 1{c_l < r_l}` (a borrow out of the low bits).
//! The borrow compares the public `c_l` with the dealer's `r_l`, chunk by chunk:
//! for each 4-bit chunk the dealer XOR-shares the 16-entry table of `1{u < r_j}`,
//! and each party looks up its share at the public index `c_j` (a one-time truth
//! table, Ishai et al. TCC 2013, with no opening needed since the index is already
//! public); `1{c_j = r_j}` is the XOR of the entries at `c_j` and `c_j − 1`, so one
//! table serves both. The 16 chunk results are combined by a 4-level tree of
//! `(lt, eq)` merges — `lt = lt_hi ⊕ eq_hi∧lt_lo`, `eq = eq_hi∧eq_lo` —
//! with bit-sliced Beaver AND triples that share their left operand.
//! The dealer also XOR-shares `msb(r) ⊕ ρ` for a random bit ρ, so the parties
//! obtain `e = msb(x) ⊕ ρ` locally from the tree's borrow, which is safe to open;
//! `[msb] = e + (1 − 2e)[ρ]` with arithmetic shares of ρ converts to Z_2^64 (the
//! daBit technique of Rotaru & Wood, INDOCRYPT 2019). Products with the sign bit
//! ride in the same rounds: for each payload value `p` (ReLU: `x` itself, as
//! `relu = x − x·msb`; a tournament's select: the values and indices to move) the
//! dealer adds a mask `(a, a·ρ)`, `p − a` is opened together with `c`, and
//! `p·msb = e·p + (1 − 2e)·p·ρ` is local once `e` is open.
//!
//! Rounds: 6 (open c; four tree levels; open e). Bytes per element to each peer:
//! 8 (c) + 5.5 (tree) + 1/8 (e), plus 8 per payload value. CrypTen needs 9 rounds and
//! 232 bytes. The dealer sends the last party ≈ 44 bytes per element (the 32-byte
//! tables, ρ, the flip bit, the tree's AND corrections), 8 more per payload value.
//! Security: semi-honest, non-colluding dealer; every opened value is masked by
//! fresh dealer randomness (c by r, AND inputs by triples, e by ρ).

use crate::correlated::{words_for, CompareShare, Request, Share, CHUNKS, CHUNK_BITS, LEVEL_PAIRS};
use crate::{Party, ProtocolError, Result};
use rayon::prelude::*;
use syft_mpc_ring::{kernels, R64};

#[inline]
fn bit(words: &[u64], e: usize) -> u64 {
    (words[e / 64] >> (e % 64)) & 1
}

/// A share of `msb = e ⊕ ρ = e + (1 − 2e)·ρ` from the opened `e` and the shares of ρ.
#[inline]
fn msb_share(e: u64, rho: R64, first: bool) -> R64 {
    let own = if first { R64(e) } else { R64::ZERO };
    own + R64(1u64.wrapping_sub(2 * e)) * rho
}

/// A share of `p·msb = e·p + (1 − 2e)·p·ρ`, with `p·ρ = ε·ρ + a·ρ` for the opened
/// `ε = p − a` and the dealer's mask `(a, a·ρ)`.
#[inline]
fn times_msb(e: u64, p: R64, eps: R64, rho: R64, a_rho: R64) -> R64 {
    R64(e) * p + R64(1u64.wrapping_sub(2 * e)) * (eps * rho + a_rho)
}

/// Bit-sliced leaf results of one block of at most 64 elements (`tb` their tables,
/// `CHUNKS` per element): bit b of `lt[j]` is `T_b,j[u]` and of `eq[j]` is
/// `T_b,j[u] ⊕ T_b,j[u − 1]` for the chunk `u = c_b,j` (`T[−1] = below_zero`).
fn leaf_block(cb: &[R64], tb: &[u16], below_zero: u32) -> ([u64; CHUNKS], [u64; CHUNKS]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked at run time); the slices are checked inside.
        return unsafe { leaf_avx2::block(cb, tb, below_zero) };
    }
    leaf_block_scalar(cb, tb, below_zero)
}

fn leaf_block_scalar(cb: &[R64], tb: &[u16], below_zero: u32) -> ([u64; CHUNKS], [u64; CHUNKS]) {
    let (mut lt, mut eq) = ([0u64; CHUNKS], [0u64; CHUNKS]);
    for (b, (cv, t)) in cb.iter().zip(tb.chunks_exact(CHUNKS)).enumerate() {
        let low = cv.0 & (u64::MAX >> 1);
        for j in 0..CHUNKS {
            let u = ((low >> (CHUNK_BITS as usize * j)) & ((1 << CHUNK_BITS) - 1)) as u32;
            // bit 1: T[u], bit 0: T[u − 1]
            let v = ((u32::from(t[j]) << 1) | below_zero) >> u;
            lt[j] |= u64::from((v >> 1) & 1) << b;
            eq[j] |= u64::from((v ^ (v >> 1)) & 1) << b;
        }
    }
    (lt, eq)
}

/// The leaf look-ups eight chunks at a time: an element's 16 tables are one 256-bit load,
/// widened to two vectors of 32-bit lanes and shifted by the 4-bit chunks of `c` at once
/// (`vpsrlvd`); `vmovmskps` packs each half's 8 result bits into a byte, and the 64×16 bit
/// matrix of a block is transposed to bit-sliced words with byte shifts and `vpmovmskb`.
#[cfg(target_arch = "x86_64")]
mod leaf_avx2 {
    use super::{CHUNKS, R64};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block(cb: &[R64], tb: &[u16], below_zero: u32) -> ([u64; CHUNKS], [u64; CHUNKS]) {
        let n = cb.len();
        assert!(n <= 64 && tb.len() >= n * CHUNKS, "a leaf block is at most 64 elements with their tables");
        // [T[u] of chunks 0..8, T[u] of chunks 8..16, eq of 0..8, eq of 8..16], one byte per element.
        let mut bytes = [[0u8; 64]; 4];
        let shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
        let nibble = _mm256_set1_epi32(15);
        let bz = _mm256_set1_epi32(below_zero as i32);
        for b in 0..n {
            let low = cb[b].0 & (u64::MAX >> 1);
            // SAFETY: element b's CHUNKS (16) tables are 32 bytes inside `tb` (asserted above).
            let t = unsafe { _mm256_loadu_si256(tb.as_ptr().add(b * CHUNKS).cast()) };
            let halves = [
                _mm256_cvtepu16_epi32(_mm256_castsi256_si128(t)),
                _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(t)),
            ];
            for (h, (tables, word)) in halves.into_iter().zip([low as u32, (low >> 32) as u32]).enumerate() {
                let u = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(word as i32), shifts), nibble);
                // bit 1: T[u], bit 0: T[u − 1]
                let v = _mm256_srlv_epi32(_mm256_or_si256(_mm256_slli_epi32::<1>(tables), bz), u);
                let here = _mm256_slli_epi32::<30>(v);
                let eq = _mm256_slli_epi32::<31>(_mm256_xor_si256(v, _mm256_srli_epi32::<1>(v)));
                bytes[h][b] = _mm256_movemask_ps(_mm256_castsi256_ps(here)) as u8;
                bytes[2 + h][b] = _mm256_movemask_ps(_mm256_castsi256_ps(eq)) as u8;
            }
        }
        let (mut lt, mut eq) = ([0u64; CHUNKS], [0u64; CHUNKS]);
        for (k, column) in bytes.iter().enumerate() {
            // SAFETY: each column is 64 bytes: two unaligned 32-byte loads.
            let (v0, v1) = unsafe {
                (_mm256_loadu_si256(column.as_ptr().cast()), _mm256_loadu_si256(column.as_ptr().add(32).cast()))
            };
            for j in 0..8 {
                // Bit j of every byte to its top bit (a 16-bit shift: the neighbour byte's
                // bits only reach the low bits), then one bit per byte.
                let by = _mm_cvtsi32_si128(7 - j as i32);
                let w0 = _mm256_movemask_epi8(_mm256_sll_epi16(v0, by)) as u32 as u64;
                let w1 = _mm256_movemask_epi8(_mm256_sll_epi16(v1, by)) as u32 as u64;
                let out = if k < 2 { &mut lt } else { &mut eq };
                out[(k % 2) * 8 + j] = w0 | (w1 << 32);
            }
        }
        (lt, eq)
    }
}

impl Party {
    /// Shares of `1{x < 0}` (0 or 1) for shared `x` read as signed 64-bit.
    pub fn ltz(&mut self, x: &[R64]) -> Result<Vec<R64>> {
        if x.is_empty() {
            return Ok(Vec::new()); // every party sees the same length: all skip the rounds
        }
        let (e, s, _) = self.masked_sign(x, &[R64::ZERO], &[])?;
        let first = self.id() == 0;
        Ok((0..x.len()).map(|i| msb_share(bit(&e, i), s.rho[i], first)).collect())
    }

    /// Shares of `max(x, 0)` for shared `x` read as signed 64-bit (fixed-point inputs work unchanged).
    pub fn relu(&mut self, x: &[R64]) -> Result<Vec<R64>> {
        Ok(self.relu_with_mask_if(x, false)?.0)
    }

    /// `(max(x, 0), 1{x ≥ 0})` in ReLU's 6 rounds: the mask a backward pass needs comes free.
    pub fn relu_with_mask(&mut self, x: &[R64]) -> Result<(Vec<R64>, Vec<R64>)> {
        self.relu_with_mask_if(x, true)
    }

    /// `relu(x) = x − x·msb(x)`, the product riding in the comparison's last round; the
    /// mask `1 − msb` (empty unless `with_mask`) is local from the same opening.
    fn relu_with_mask_if(&mut self, x: &[R64], with_mask: bool) -> Result<(Vec<R64>, Vec<R64>)> {
        if x.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let (e, s, opened) = self.masked_sign(x, &[R64::ZERO], x)?;
        let eps = &opened[x.len()..];
        let mut out = x.to_vec();
        kernels::for_chunks_mut(&mut out, |o, out| {
            for (i, v) in (o..).zip(out) {
                *v -= times_msb(bit(&e, i), *v, eps[i], s.rho[i], s.prod_arho[i]);
            }
        });
        let mut mask = vec![R64::ZERO; if with_mask { x.len() } else { 0 }];
        let first = self.id() == 0;
        let one = if first { R64(1) } else { R64::ZERO };
        kernels::for_chunks_mut(&mut mask, |o, mask| {
            for (i, m) in (o..).zip(mask) {
                *m = one - msb_share(bit(&e, i), s.rho[i], first);
            }
        });
        Ok((out, mask))
    }

    /// Shares of `p_j·1{x < 0}` for each vector `p_j` of `payload` (vectors of `x.len()`
    /// values, one after another), in the comparison's 6 rounds: a select `a + 1{a < b}·(b − a)`
    /// without a Beaver round of its own (a max tournament's values and indices).
    pub fn ltz_times(&mut self, x: &[R64], payload: &[R64]) -> Result<Vec<R64>> {
        self.below_times(x, &[R64::ZERO], payload)
    }

    /// Shares of `p·1{x < t_j}` for public thresholds `t_j` (signed ring values, with
    /// `x − t_j` within the signed 64-bit range, as for any comparison of a difference): each
    /// vector of `payload` holds `thresholds.len()` blocks of `x.len()` values, and block j
    /// is multiplied by the bits of threshold j. In the comparison's 6 rounds, with one
    /// opening of `x + r` and one set of leaf tables for all thresholds (the borrow of
    /// `x − t_j` is that of the public `c − t_j` against the same r): per extra threshold,
    /// only the tree, ρ and the products are added.
    pub fn below_times(&mut self, x: &[R64], thresholds: &[R64], payload: &[R64]) -> Result<Vec<R64>> {
        let compared = x.len() * thresholds.len();
        if payload.is_empty() {
            return Ok(Vec::new()); // every party sees the same lengths: all skip the rounds
        }
        if compared == 0 || !payload.len().is_multiple_of(compared) {
            return Err(ProtocolError::Shape(format!(
                "a payload of {} values for a comparison of {} values with {} thresholds: it must be whole \
                 vectors of {compared}",
                payload.len(),
                x.len(),
                thresholds.len()
            )));
        }
        let (e, s, opened) = self.masked_sign(x, thresholds, payload)?;
        let eps = &opened[x.len()..];
        let mut out = payload.to_vec();
        kernels::for_chunks_mut(&mut out, |o, out| {
            for (k, v) in (o..).zip(out) {
                let i = k % compared;
                *v = times_msb(bit(&e, i), *v, eps[k], s.rho[i], s.prod_arho[k]);
            }
        });
        Ok(out)
    }

    /// Runs the comparison of `x − t` for each threshold `t` up to the opened
    /// `e = msb(x − t) ⊕ ρ` (bit-packed, threshold after threshold); returns it with the
    /// material and the first round's opening: `c = x + r`, then `ε = p − a` of the vectors
    /// in `payload` (to be multiplied by the bits: whole vectors of `thresholds·x.len()`,
    /// checked by the callers) from index `x.len()` on.
    fn masked_sign(
        &mut self,
        x: &[R64],
        thresholds: &[R64],
        payload: &[R64],
    ) -> Result<(Vec<u64>, CompareShare, Vec<R64>)> {
        let len = x.len();
        let compared = len * thresholds.len();
        let req = Request::Compare { len, thresholds: thresholds.len(), products: payload.len() / compared.max(1) };
        req.validate()?;
        let (mut share, explicit) = self.material(&req)?;
        let Share::Compare(s) = &share else { unreachable!("compare request") };
        let first = self.id() == 0;

        // Round 1: c = x + r and ε = p − a.
        let mut masked = vec![R64::ZERO; len + payload.len()];
        let (c, eps) = masked.split_at_mut(len);
        kernels::add_into(c, x, &s.r);
        kernels::sub_into(eps, payload, &s.prod_a);
        let opened = self.open_owned(masked)?;
        self.receive_explicit(&mut share, explicit)?;
        let Share::Compare(s) = share else { unreachable!("compare request") };
        // The public `c − t` of each threshold, compared against the same r (and tables).
        let shifted: Vec<R64>;
        let c: &[R64] = if thresholds == [R64::ZERO] {
            &opened[..len]
        } else {
            shifted = thresholds.iter().flat_map(|&t| opened[..len].iter().map(move |&v| v - t)).collect();
            &shifted
        };

        // Leaves: with T_j = the shared table of 1{u < r_j}, lt_j = T_j[c_j] and
        // eq_j = 1{c_j ≤ r_j} ⊕ 1{c_j < r_j} = T_j[c_j − 1] ⊕ T_j[c_j], where T_j[−1] = 1
        // (a public constant: party 0 holds it). Blocks of 64 elements keep their tables
        // (2 KiB) in L1 and produce one bit-sliced word per chunk.
        let words = words_for(compared);
        let below_zero = u32::from(first);
        // Compared value k uses element k mod len's tables: a block's tables are one slice,
        // copied together only for a block that wraps from one threshold to the next.
        let leaf = |(b, cb): (usize, &[R64])| {
            let i0 = (b * 64) % len;
            if i0 + cb.len() <= len {
                leaf_block(cb, &s.tables[i0 * CHUNKS..(i0 + cb.len()) * CHUNKS], below_zero)
            } else {
                let tb: Vec<u16> =
                    (i0..i0 + cb.len()).flat_map(|i| &s.tables[(i % len) * CHUNKS..][..CHUNKS]).copied().collect();
                leaf_block(cb, &tb, below_zero)
            }
        };
        let blocks: Vec<([u64; CHUNKS], [u64; CHUNKS])> = if kernels::parallel(compared) {
            c.par_chunks(64).enumerate().map(leaf).collect()
        } else {
            c.chunks(64).enumerate().map(leaf).collect()
        };
        let mut lt = vec![0u64; CHUNKS * words];
        let mut eq = vec![0u64; CHUNKS * words];
        for (w, (l, q)) in blocks.iter().enumerate() {
            for j in 0..CHUNKS {
                lt[j * words + w] = l[j];
                eq[j * words + w] = q[j];
            }
        }

        // Rounds 2-5: merge pairs (hi = 2p+1, lo = 2p) level by level.
        for (lvl, &pairs) in LEVEL_PAIRS.iter().enumerate() {
            let t = &s.levels[lvl];
            let top = pairs == 1; // only `lt` is needed at the root
            let node = |v: &[u64], k: usize| v[k * words..(k + 1) * words].to_vec();
            let mut msg = Vec::with_capacity(3 * pairs * words);
            for p in 0..pairs {
                let sl = p * words..(p + 1) * words;
                msg.extend(node(&eq, 2 * p + 1).iter().zip(&t.a[sl.clone()]).map(|(x, a)| x ^ a));
                msg.extend(node(&lt, 2 * p).iter().zip(&t.b1[sl.clone()]).map(|(x, b)| x ^ b));
                if !top {
                    msg.extend(node(&eq, 2 * p).iter().zip(&t.b2[sl]).map(|(x, b)| x ^ b));
                }
            }
            let opened = self.open_bits(&msg)?;
            let per = if top { 2 } else { 3 };
            let mut new_lt = vec![0u64; pairs * words];
            let mut new_eq = vec![0u64; if top { 0 } else { pairs * words }];
            for p in 0..pairs {
                let d = &opened[(per * p) * words..(per * p + 1) * words];
                let f1 = &opened[(per * p + 1) * words..(per * p + 2) * words];
                for w in 0..words {
                    let k = p * words + w;
                    // Beaver AND share: c ⊕ d∧b ⊕ a∧f (⊕ d∧f on party 0).
                    let and = |f: u64, b: u64, c: u64| c ^ (d[w] & b) ^ (t.a[k] & f) ^ if first { d[w] & f } else { 0 };
                    new_lt[k] = lt[(2 * p + 1) * words + w] ^ and(f1[w], t.b1[k], t.c1[k]);
                    if !top {
                        let f2 = opened[(per * p + 2) * words + w];
                        new_eq[k] = and(f2, t.b2[k], t.c2[k]);
                    }
                }
            }
            lt = new_lt;
            eq = new_eq;
        }

        // Round 6: open e = borrow ⊕ (msb(r) ⊕ ρ) ⊕ msb(c).
        lt.iter_mut().zip(&s.flip).for_each(|(b, f)| *b ^= f);
        if first {
            for (i, cv) in c.iter().enumerate() {
                lt[i / 64] ^= cv.msb() << (i % 64);
            }
        }
        let e = self.open_bits(&lt)?;
        Ok((e, s, opened))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syft_mpc_ring::prg::Prg;

    #[test]
    fn leaf_kernels_agree() {
        let mut prg = Prg::from_entropy();
        for n in [0usize, 1, 7, 31, 32, 33, 63, 64] {
            let c = prg.ring_vec(n);
            let tables: Vec<u16> = prg.vec(n * CHUNKS);
            for below_zero in [0, 1] {
                let want = leaf_block_scalar(&c, &tables, below_zero);
                assert_eq!(leaf_block(&c, &tables, below_zero), want, "{n} elements, T[-1] = {below_zero}");
            }
        }
    }
}
