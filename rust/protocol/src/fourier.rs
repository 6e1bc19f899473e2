//! A Fourier series of a shared value in two rounds, with trigonometric masks from the
//! dealer (Boura, Chillotti, Gama, Jetchev, Peceny and Petric, "High-precision
//! privacy-preserving real-valued function evaluation", FC 2018).
//!
//! The angle `θ = 2π·t/2^32` is taken from `t = x·m mod 2^32`: reducing every share mod
//! 2^32 is local, so the period `2^32/m` ring units costs nothing to impose. The dealer
//! draws a mask `r` in Z_2^32 and shares `cos kφ`, `sin kφ` for `φ = 2π·r/2^32`; the
//! parties open `c = t + r mod 2^32` (uniform, so it reveals nothing) and, with
//! `ψ = 2π·c/2^32 = θ + φ`, the angle-difference identities make each term linear in
//! the shared values:
//! `a·cos kθ + b·sin kθ = cos kφ·(a·cos kψ + b·sin kψ) + sin kφ·(a·sin kψ − b·cos kψ)`.
//!
//! The series is bounded by 1 (Σ|a_k| + |b_k| ≤ 1), so it is computed in Z_2^32 with
//! 29 fractional bits: the dealer's values with 12, the public factors with 17. This
//! halves the material next to Z_2^64. A second opening divides it by a public divisor
//! and lifts it into Z_2^64 at once: the dealer-assisted truncation of `trunc.rs` run in
//! Z_2^32 (its correction terms are shares in Z_2^64 already).
//!
//! Rounds: 2. Bytes: 8 per element to each peer. The dealer sends the last party
//! 8 bytes per element and harmonic, plus 16. Security: semi-honest, non-colluding
//! dealer; both openings are masked by uniform dealer randomness.

use crate::correlated::{Request, Share};
use crate::{Party, ProtocolError, Result};
use syft_mpc_ring::{kernels, R64};

/// Radians per unit of a 32-bit turn.
const TURN: f64 = std::f64::consts::TAU / 4_294_967_296.0;

/// `(cos, sin)` at the centres `(2j + 1)·π/8` of the eight octants.
const OCTANT_CENTRES: [(f64, f64); 8] = {
    let (c, s) = (0.923_879_532_511_286_7, 0.382_683_432_365_089_8);
    [(c, s), (s, c), (-s, c), (-c, s), (-c, -s), (-s, -c), (s, -c), (c, -s)]
};

/// `(cos, sin)` of `2π·t/2^32`, from `+ − ×` alone (Taylor polynomials on the offset from
/// the octant's centre, |δ| ≤ π/8, error below 1e−15): unlike libm's, the result is
/// bit-identical on every platform, which the parties need, since each encodes the same
/// public value on its own and their shares only add up if the encodings agree.
#[inline]
pub(crate) fn turn_cos_sin(t: u32) -> (f64, f64) {
    let d = (f64::from(t & ((1 << 29) - 1)) - f64::from(1u32 << 28)) * TURN;
    let d2 = d * d;
    let s = d
        * (1.0
            + d2 * (-1.0 / 6.0
                + d2 * (1.0 / 120.0 + d2 * (-1.0 / 5040.0 + d2 * (1.0 / 362_880.0 + d2 * (-1.0 / 39_916_800.0))))));
    let c = 1.0
        + d2 * (-0.5
            + d2 * (1.0 / 24.0
                + d2 * (-1.0 / 720.0
                    + d2 * (1.0 / 40_320.0 + d2 * (-1.0 / 3_628_800.0 + d2 * (1.0 / 479_001_600.0))))));
    let (oc, os) = OCTANT_CENTRES[(t >> 29) as usize];
    (oc * c - os * s, os * c + oc * s)
}

/// Elements per block of the harmonic loops: wide enough for the compiler to vectorise
/// the floating-point work across elements.
pub(crate) const LANES: usize = 8;

/// `cos kα`, `sin kα` for k = 1, 2, … lane by lane for the angles `α = 2π·t/2^32` of a
/// block, by repeated rotation by α (the angle-addition recurrence: exact IEEE operations,
/// so reproducible too). A struct, not a callback, so the loops using it vectorise.
pub(crate) struct Harmonics {
    step: ([f64; LANES], [f64; LANES]),
    pub cos: [f64; LANES],
    pub sin: [f64; LANES],
}

impl Harmonics {
    /// At k = 1.
    #[inline(always)]
    pub(crate) fn new(t: &[u32; LANES]) -> Harmonics {
        let (mut c1, mut s1) = ([0.0; LANES], [0.0; LANES]);
        for l in 0..LANES {
            (c1[l], s1[l]) = turn_cos_sin(t[l]);
        }
        Harmonics { step: (c1, s1), cos: c1, sin: s1 }
    }

    /// From k to k + 1.
    #[inline(always)]
    pub(crate) fn advance(&mut self) {
        let (c1, s1) = &self.step;
        for l in 0..LANES {
            let (c, s) = (self.cos[l], self.sin[l]);
            self.cos[l] = c * c1[l] - s * s1[l];
            self.sin[l] = s * c1[l] + c * s1[l];
        }
    }
}

/// 1.5·2^52: adding it rounds any |w| < 2^51 to an integer held in the low mantissa bits.
const ROUNDING: f64 = 6_755_399_441_055_744.0;

/// `v·scale` rounded to the nearest ring integer (ties to even), for `|v·scale| < 2^51`:
/// one product and one sum (reproducible, and vectorisable, unlike a float-to-int cast).
#[inline(always)]
pub(crate) fn encode(v: f64, scale: f64) -> R64 {
    R64((v * scale + ROUNDING).to_bits().wrapping_sub(ROUNDING.to_bits()))
}

/// The first `v.len()` (at most `LANES`) values of a block, zero-padded.
#[inline(always)]
fn padded(v: &[u32]) -> [u32; LANES] {
    <[u32; LANES]>::try_from(v).unwrap_or_else(|_| {
        let mut o = [0; LANES];
        o[..v.len()].copy_from_slice(v);
        o
    })
}

/// A party's share in Z_2^32 of the series for the elements `o..o + out.len()`: block by
/// block, `Σ_k P_k·cos kφ + Q_k·sin kφ` with the public factors `P_k`, `Q_k` of the opened
/// angles (see the module comment) and the shared `cos kφ`, `sin kφ` rows of `trig`.
/// Its own AVX2 entry point, as `encode_trig`'s: through `kernels::with_simd` the compiler
/// kept these loop nests in a closure built without AVX2 (no 256-bit code at all).
fn series_share(o: usize, out: &mut [u32], opened: &[u32], trig: &[u32], a: &[f64], b: &[f64]) {
    #[inline(always)]
    fn body(o: usize, out: &mut [u32], opened: &[u32], trig: &[u32], a: &[f64], b: &[f64]) {
        let n = opened.len();
        for (blk, y) in out.chunks_mut(LANES).enumerate() {
            let (i0, m) = (o + blk * LANES, y.len());
            let mut acc = [0u32; LANES];
            let mut h = Harmonics::new(&padded(&opened[i0..i0 + m]));
            for j in 0..a.len() {
                let cos_r = padded(&trig[2 * j * n + i0..][..m]);
                let sin_r = padded(&trig[(2 * j + 1) * n + i0..][..m]);
                for l in 0..LANES {
                    let (c, sn) = (h.cos[l], h.sin[l]);
                    let p = encode(a[j] * c + b[j] * sn, FACTOR_SCALE).0 as u32;
                    let q = encode(a[j] * sn - b[j] * c, FACTOR_SCALE).0 as u32;
                    acc[l] = acc[l].wrapping_add(p.wrapping_mul(cos_r[l])).wrapping_add(q.wrapping_mul(sin_r[l]));
                }
                h.advance();
            }
            y.copy_from_slice(&acc[..m]);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(o: usize, out: &mut [u32], opened: &[u32], trig: &[u32], a: &[f64], b: &[f64]) {
            body(o, out, opened, trig, a, b)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked at run time). The same IEEE operations as
            // without it (no fused multiply-add), so parties with and without agree.
            return unsafe { avx2(o, out, opened, trig, a, b) };
        }
    }
    body(o, out, opened, trig, a, b)
}

/// The dealer's `cos kφ`, `sin kφ` (k = 1..=harmonics) of the masks `r`, with 12 fractional
/// bits, into the rows of `trig` (see [`FourierShare`](crate::correlated::FourierShare)).
pub(crate) fn encode_trig(r: &[u32], harmonics: usize, trig: &mut [u32]) {
    #[inline(always)]
    fn body(r: &[u32], harmonics: usize, trig: &mut [u32]) {
        let n = r.len();
        for (i0, block) in (0..n).step_by(LANES).zip(r.chunks(LANES)) {
            let m = block.len();
            let mut h = Harmonics::new(&padded(block));
            for k in 0..harmonics {
                let (mut ce, mut se) = ([0u32; LANES], [0u32; LANES]);
                for l in 0..LANES {
                    ce[l] = encode(h.cos[l], TRIG_SCALE).0 as u32;
                    se[l] = encode(h.sin[l], TRIG_SCALE).0 as u32;
                }
                trig[2 * k * n + i0..][..m].copy_from_slice(&ce[..m]);
                trig[(2 * k + 1) * n + i0..][..m].copy_from_slice(&se[..m]);
                h.advance();
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(r: &[u32], harmonics: usize, trig: &mut [u32]) {
            body(r, harmonics, trig)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked at run time).
            return unsafe { avx2(r, harmonics, trig) };
        }
    }
    body(r, harmonics, trig)
}

/// Scale of the dealer's trigonometric values (12 fractional bits) and of the public factors
/// (17): the series carries 29, so a value bounded by 1 stays within ±2^29, below the
/// 2^30 bias of the division.
const TRIG_SCALE: f64 = (1u32 << 12) as f64;
const FACTOR_SCALE: f64 = (1u32 << 17) as f64;
const BIAS: u32 = 1 << 30;

impl Party {
    /// Shares in Z_2^64 of `⌊2^29·S/divisor⌋` (± 1) for the series
    /// `S = Σ_{k=1..K} a_k·cos kθ + b_k·sin kθ` at `θ = 2π·(x·multiplier mod 2^32)/2^32`
    /// (`a = cos_coef`, `b = sin_coef`, K their length, `Σ|a_k| + |b_k| ≤ 1`): a series of
    /// period `2^32/multiplier` in the ring's units, encoded at `2^29/divisor`. Its error
    /// is at most `√2·2^−13·Σ(|a_k| + |b_k|) + K·2^−17` plus a unit of the output. See the
    /// module comment for the protocol. Every party passes the same coefficients.
    pub fn fourier(
        &mut self,
        x: &[R64],
        multiplier: u64,
        cos_coef: &[f64],
        sin_coef: &[f64],
        divisor: u64,
    ) -> Result<Vec<R64>> {
        if cos_coef.len() != sin_coef.len() {
            return Err(ProtocolError::Shape(format!(
                "a Fourier series with {} cosine and {} sine coefficients",
                cos_coef.len(),
                sin_coef.len()
            )));
        }
        let bound: f64 = cos_coef.iter().chain(sin_coef).map(|c| c.abs()).sum();
        // NaN fails this too (a NaN coefficient makes the sum NaN).
        if bound.is_nan() || bound > 1.0 + 1e-9 {
            return Err(ProtocolError::Shape(format!(
                "Fourier coefficients whose magnitudes sum to {bound}: the sum must be at most 1 \
                 (scale the series down and its result up)"
            )));
        }
        let (n, k) = (x.len(), cos_coef.len());
        let req = Request::Fourier { len: n, harmonics: k, divisor };
        req.validate()?;
        let (mut share, explicit) = self.material(&req)?;
        let Share::Fourier(f) = &share else { unreachable!("Fourier request") };
        let masked: Vec<u32> =
            x.iter().zip(&f.r).map(|(v, &r)| (v.0.wrapping_mul(multiplier) as u32).wrapping_add(r)).collect();
        let opened = self.open_u32(masked)?;
        self.receive_explicit(&mut share, explicit)?;
        let Share::Fourier(f) = share else { unreachable!("Fourier request") };

        let mut series = vec![0u32; n];
        kernels::for_chunks_mut(&mut series, |o, out| series_share(o, out, &opened, &f.trig, cos_coef, sin_coef));

        // Divide by d and lift: open C = S + B + R (mod 2^32) for the dealer's R; since
        // S + B < 2^31, it wrapped iff msb(R) ∧ ¬msb(C), and
        // ⌊(S + B)/d⌋ = ⌊C/d⌋ − ⌊R/d⌋ + wrap·⌊2^32/d⌋ (± 1), in Z_2^64.
        let first = self.id() == 0;
        let div = crate::trunc::Divisor::new(divisor);
        let bias = if first { BIAS - BIAS % divisor as u32 } else { 0 };
        series.iter_mut().zip(&f.out_r).for_each(|(v, &r)| *v = v.wrapping_add(r).wrapping_add(bias));
        let opened = self.open_u32(series)?;
        let wrap_unit = R64((1u64 << 32) / divisor);
        let bias_q = R64(u64::from(BIAS / divisor as u32));
        let out = opened
            .iter()
            .zip(f.quotient.iter().zip(&f.msb))
            .map(|(&c, (&q, &m))| {
                crate::trunc::quotient_share(u64::from(c >> 31), div.of(u64::from(c)), q, m, wrap_unit, bias_q, first)
            })
            .collect();
        Ok(out)
    }

    /// Reveals values shared in Z_2^32 (two to a word on the wire). Rounds: 1.
    fn open_u32(&mut self, mut v: Vec<u32>) -> Result<Vec<u32>> {
        let words: Vec<u64> = v.chunks(2).map(|p| u64::from(p[0]) | u64::from(*p.get(1).unwrap_or(&0)) << 32).collect();
        let theirs = self.exchange_all(&words)?;
        for th in &theirs {
            for (pair, &w) in v.chunks_mut(2).zip(&th[..words.len()]) {
                for (h, a) in pair.iter_mut().enumerate() {
                    *a = a.wrapping_add((w >> (32 * h)) as u32);
                }
            }
        }
        self.recycle(theirs);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_cos_sin_matches_libm() {
        let mut worst = 0.0f64;
        let mut t = 0u32;
        for i in 0..200_000u32 {
            t = t.wrapping_add(0x9E37_79B9).wrapping_add(i);
            for v in [t, 0, 1 << 29, (1 << 29) - 1, u32::MAX, 1 << 31, 3 << 30] {
                let (c, s) = turn_cos_sin(v);
                let (ls, lc) = (f64::from(v) * TURN).sin_cos();
                worst = worst.max((c - lc).abs()).max((s - ls).abs());
            }
        }
        assert!(worst < 1e-14, "worst error {worst:e}");
    }

    #[test]
    fn harmonics_follow_the_angle() {
        let t = [0u32, 12_345, 1 << 31, u32::MAX, 0xDEAD_BEEF, 1, 3 << 29, 0x1234_5678];
        let mut h = Harmonics::new(&t);
        for k in 1..=12 {
            for l in 0..LANES {
                let a = f64::from(t[l]) * TURN * k as f64;
                assert!((h.cos[l] - a.cos()).abs() < 1e-13 && (h.sin[l] - a.sin()).abs() < 1e-13, "t {} k {k}", t[l]);
            }
            h.advance();
        }
    }

    #[test]
    fn encode_rounds_to_nearest() {
        for (v, want) in [(0.0, 0i64), (1.25, 80), (-1.25, -80), (0.5 / 64.0, 0), (1.5 / 64.0, 2), (-1e6, -64_000_000)]
        {
            assert_eq!(encode(v, 64.0).0 as i64, want, "{v}");
        }
        let big = (1u64 << 50) as f64;
        assert_eq!(encode(-big, 1.0).0 as i64, -(1i64 << 50));
    }
}
