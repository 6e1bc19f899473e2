//! Truncation: division of a shared value by a public divisor, used after every
//! fixed-point product (which carries twice the fractional bits).

use crate::correlated::{MsbShare, Request, Share};
use crate::party::Explicit;
use crate::{Party, ProtocolError, Result};
use syft_mpc_ring::{as_ring, as_u64, kernels, R64};

/// Shares are shifted into `[0, 2^63)` before masking by (a multiple of the divisor
/// close to) `2^62`: inputs must lie in `[−2^62 + d, 2^62)`.
const BIAS: u64 = 1 << 62;

/// `⌊v / d⌋` for a fixed divisor: a shift when `d` is a power of two (every binary
/// fixed-point rescale), a division otherwise.
#[derive(Clone, Copy)]
pub(crate) struct Divisor {
    d: u64,
    shift: Option<u32>,
}

impl Divisor {
    pub(crate) fn new(d: u64) -> Divisor {
        Divisor { d, shift: d.is_power_of_two().then(|| d.trailing_zeros()) }
    }

    #[inline]
    pub(crate) fn of(self, v: u64) -> u64 {
        match self.shift {
            Some(s) => v >> s,
            None => v / self.d,
        }
    }
}

/// A party's share of `⌊x/d⌋` from the opened `c = x + B + r` of a dealer-assisted truncation
/// (in Z_2^64, or in Z_2^32 for the Fourier series): `c`'s top bit and `⌊c/d⌋`, the shares
/// `q` of `⌊r/d⌋` and `m` of `msb(r)`, `⌊2^ℓ/d⌋` and `B/d`; see [`Party::truncate`].
#[inline]
pub(crate) fn quotient_share(c_msb: u64, c_div: u64, q: R64, m: R64, wrap_unit: R64, bias_q: R64, first: bool) -> R64 {
    let wrapped = R64(1 - c_msb) * m * wrap_unit - q;
    if first {
        wrapped + R64(c_div) - bias_q
    } else {
        wrapped
    }
}

/// `⌊2^64/d⌋`, the weight of a wrap of `x + B + r` in `⌊·/d⌋` (0 for `d = 1`).
pub(crate) fn wrap_unit(divisor: u64) -> u64 {
    ((1u128 << 64) / u128::from(divisor)) as u64
}

/// Bytes in which the dealer sends the last party's share of `msb(r)` for divisor `d`. The
/// shares enter the result only as `m·⌊2^64/d⌋` in Z_2^64, and with `t` trailing zero bits in
/// `⌊2^64/d⌋` that product depends on `m mod 2^(64−t)` alone: for `d = 2^s`, `m mod 2^s`. So
/// 2 bytes for `d = 2^s` with `s ≤ 16` (every fixed-point rescale at 16 fractional bits or
/// fewer: a 1024² product's pair is 10 instead of 16 MiB), 4 for `s ≤ 32`, else 8.
pub(crate) fn msb_bytes(divisor: u64) -> usize {
    match 64 - wrap_unit(divisor).trailing_zeros().min(64) {
        0..=16 => 2,
        17..=32 => 4,
        _ => 8,
    }
}

/// Whether dividing by `divisor` takes the protocol: 1 is the identity, 0 an error.
pub(crate) fn needs_truncation(divisor: u64) -> Result<bool> {
    match divisor {
        0 => Err(ProtocolError::Shape("truncation by a divisor of 0: the divisor must be positive".into())),
        1 => Ok(false),
        _ => Ok(true),
    }
}

/// A product's or a truncation's truncation pair, taken from the material queue, with
/// whether the last party has read its explicit part yet.
pub(crate) struct TruncPair {
    pub(crate) share: Share,
    pub(crate) explicit: Explicit,
    divisor: u64,
}

impl TruncPair {
    /// `x += r + B` (`B` on party 0 only): the value that [`Party::truncate_masked`] opens.
    pub(crate) fn mask(&self, x: &mut [R64], first: bool) {
        let Share::Trunc(t) = &self.share else { unreachable!("truncation request") };
        let bias = if first { self.bias() } else { R64::ZERO };
        kernels::for_chunks_mut(x, |o, m| m.iter_mut().zip(&t.r[o..]).for_each(|(v, &r)| *v += r + bias));
    }

    /// `B`: the multiple of the divisor nearest below 2^62, so removing `B/d` after the
    /// division is exact.
    pub(crate) fn bias(&self) -> R64 {
        R64(BIAS / self.divisor * self.divisor)
    }

    /// The mask `r` itself, for a last party that starts its product's accumulator at it
    /// (its `B` is zero): the product then needs no pass of its own to be masked.
    pub(crate) fn take_mask(&mut self) -> Vec<R64> {
        let Share::Trunc(t) = &mut self.share else { unreachable!("truncation request") };
        std::mem::take(&mut t.r)
    }

    pub(crate) fn r(&self) -> &[R64] {
        let Share::Trunc(t) = &self.share else { unreachable!("truncation request") };
        &t.r
    }
}

/// The last pass of a truncation: `c = own + peer` (the opening) and from it this party's
/// share of the quotient, per [`quotient_share`].
struct Finish {
    div: Divisor,
    wrap_unit: R64,
    bias_q: R64,
    first: bool,
}

impl Finish {
    fn apply<M: Copy + Into<u64> + Sync>(&self, out: &mut [R64], peer: &[R64], quotient: &[R64], msb: &[M]) {
        kernels::for_chunks_mut(out, |o, out| {
            let ins = peer[o..].iter().zip(&quotient[o..]).zip(&msb[o..]);
            for (v, ((&p, &q), &m)) in out.iter_mut().zip(ins) {
                let c = *v + p;
                *v = quotient_share(
                    c.msb(),
                    self.div.of(c.0),
                    q,
                    R64(m.into()),
                    self.wrap_unit,
                    self.bias_q,
                    self.first,
                );
            }
        });
    }
}

impl Party {
    /// Dealer-assisted truncation for any number of parties: shares of `⌊x / d⌋`, off by
    /// at most one unit, for every `x ∈ [−2^62 + d, 2^62)`.
    ///
    /// The parties open `c = x + B + r` (`B` the multiple of `d` nearest below 2^62) for a dealer mask `r` uniform in Z_2^64.
    /// Since `x + B < 2^63`, the sum wrapped iff `r`'s top bit is set and `c`'s is
    /// not (the wrap-bit trick of Escudero et al., "Improved Primitives for MPC over
    /// Mixed Arithmetic-Binary Circuits", CRYPTO 2020), so with shares of `⌊r/d⌋` and
    /// `msb(r)` from the dealer:
    /// `⌊x/d⌋ ≈ ⌊c/d⌋ − ⌊r/d⌋ + (1 − msb(c))·msb(r)·⌊2^64/d⌋ − B/d`.
    /// Unlike local share truncation (SecureML), which PySyft 0.2 and CrypTen also
    /// apply with 3+ parties where it is wrong, this is correct for every `n`
    /// and never produces a large error.
    ///
    /// Rounds: 1. Bytes: 8 per element to each peer; from the dealer to the last party
    /// 8 + [`msb_bytes`] per element (10 for `d ≤ 2^16`). Security: semi-honest,
    /// non-colluding dealer; `c` is uniform because `r` is.
    pub fn truncate(&mut self, x: &[R64], divisor: u64) -> Result<Vec<R64>> {
        self.truncate_owned(x.to_vec(), divisor)
    }

    /// [`Party::truncate`] masking `x`'s buffer in place.
    pub(crate) fn truncate_owned(&mut self, mut masked: Vec<R64>, divisor: u64) -> Result<Vec<R64>> {
        if !needs_truncation(divisor)? {
            return Ok(masked);
        }
        let mut pair = self.truncation_pair(masked.len(), divisor)?;
        pair.mask(&mut masked, self.id() == 0);
        self.truncate_masked(masked, &mut pair)
    }

    /// The next material, which must be the truncation pair for `len` values and `divisor`.
    pub(crate) fn truncation_pair(&mut self, len: usize, divisor: u64) -> Result<TruncPair> {
        let req = Request::Trunc { len, divisor };
        req.validate()?;
        let (share, explicit) = self.material(&req)?;
        Ok(TruncPair { share, explicit, divisor })
    }

    /// Shares of `⌊x/d⌋` from shares of `x + B + r` (see [`Party::truncate`]): opens them and,
    /// in one pass, sums the opening and computes this party's share of the quotient.
    pub(crate) fn truncate_masked(&mut self, mut out: Vec<R64>, pair: &mut TruncPair) -> Result<Vec<R64>> {
        let theirs = self.exchange_all(as_u64(&out))?;
        self.receive_explicit(&mut pair.share, pair.explicit)?;
        pair.explicit = Explicit::Received;
        let n = out.len();
        // With more than one peer, all but one are summed first.
        for t in theirs.iter().skip(1) {
            kernels::add_assign(&mut out, as_ring(&t[..n]));
        }
        let Share::Trunc(t) = &pair.share else { unreachable!("truncation request") };
        let divisor = pair.divisor;
        let consts = Finish {
            div: Divisor::new(divisor),
            wrap_unit: R64(wrap_unit(divisor)),
            bias_q: R64(BIAS / divisor),
            first: self.id() == 0,
        };
        let peer = as_ring(&theirs[0][..n]);
        // The msb shares in the width they travelled in (`msb_bytes`), zero-extended.
        match &t.msb {
            MsbShare::W64(m) => consts.apply(&mut out, peer, &t.quotient, as_u64(m)),
            MsbShare::W32(m) => consts.apply(&mut out, peer, &t.quotient, m),
            MsbShare::W16(m) => consts.apply(&mut out, peer, &t.quotient, m),
        }
        self.recycle(theirs);
        if let Share::Trunc(t) = &mut pair.share {
            let quotient = std::mem::take(&mut t.quotient);
            self.recycle_ring(quotient);
        }
        Ok(out)
    }

    /// Local truncation by `2^frac_bits` for two parties (SecureML, Mohassel & Zhang,
    /// S&P 2017): party 0 shifts its share, party 1 shifts the negation of its share.
    /// Rounds: 0. Correct up to one unit except with probability ≈ `|x| / 2^63`
    /// per element, when the error is huge — prefer [`Party::truncate`] for large tensors.
    pub fn truncate_local(&self, x: &[R64], frac_bits: u32) -> Result<Vec<R64>> {
        if self.n_parties() != 2 {
            return Err(ProtocolError::Parties(format!(
                "local (SecureML) truncation is only correct for 2 parties, this session has {}; use truncate()",
                self.n_parties()
            )));
        }
        if frac_bits >= 64 {
            return Err(ProtocolError::Shape(format!("cannot truncate by {frac_bits} bits")));
        }
        let mut out = x.to_vec();
        let first = self.id() == 0;
        kernels::for_chunks_mut(&mut out, |_, out| {
            for v in out {
                *v = if first { R64(v.0 >> frac_bits) } else { -R64((-*v).0 >> frac_bits) };
            }
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn msb_widths() {
        assert_eq!(msb_bytes(2), 2);
        assert_eq!(msb_bytes(1 << 16), 2);
        assert_eq!(msb_bytes(1 << 17), 4);
        assert_eq!(msb_bytes(1 << 32), 4);
        assert_eq!(msb_bytes(1 << 33), 8);
        assert_eq!(msb_bytes(1 << 63), 8);
        // ⌊2^64/1000⌋ and ⌊2^64/3⌋ are odd: every bit of the share counts.
        assert_eq!(msb_bytes(1000), 8);
        assert_eq!(msb_bytes(3), 8);
    }

    /// A party's share of the result is the same whether its msb share is the 64-bit value
    /// of the full-width scheme or only the low `msb_bytes(d)` bytes the dealer now sends.
    fn same_share_at_every_width(
        d: u64,
        m: u64,
        c: u64,
        q: u64,
        first: bool,
    ) -> std::result::Result<(), TestCaseError> {
        let narrow = match msb_bytes(d) {
            2 => m as u16 as u64,
            4 => m as u32 as u64,
            _ => m,
        };
        let div = Divisor::new(d);
        let (unit, bias_q) = (R64(wrap_unit(d)), R64(BIAS / d));
        let share = |m| quotient_share(R64(c).msb(), div.of(c), R64(q), R64(m), unit, bias_q, first);
        prop_assert_eq!(share(m), share(narrow), "d = {}, m = {:#x}", d, m);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn narrow_msb_share_is_exact_for_powers_of_two(s in 1u32..64, m: u64, c: u64, q: u64, first: bool) {
            same_share_at_every_width(1 << s, m, c, q, first)?;
        }

        /// Any divisor, and especially those next to a power of two.
        #[test]
        fn narrow_msb_share_is_exact_for_any_divisor(
            d in prop_oneof![2u64.., (1u32..64, -3i64..=3).prop_map(|(s, o)| ((1i128 << s) + i128::from(o)).max(2) as u64)],
            m: u64, c: u64, q: u64, first: bool,
        ) {
            same_share_at_every_width(d, m, c, q, first)?;
        }
    }
}
