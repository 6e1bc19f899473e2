//! Truncation: division of a shared value by a public divisor, used after every
//! fixed-point product (which carries twice the fractional bits).

use crate::correlated::{Request, Share};
use crate::{Party, ProtocolError, Result};
use syft_mpc_ring::{kernels, R64};

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

/// Whether dividing by `divisor` takes the protocol: 1 is the identity, 0 an error.
pub(crate) fn needs_truncation(divisor: u64) -> Result<bool> {
    match divisor {
        0 => Err(ProtocolError::Shape("truncation by a divisor of 0: the divisor must be positive".into())),
        1 => Ok(false),
        _ => Ok(true),
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
    /// Rounds: 1. Bytes: 8 per element to each peer. Security: semi-honest, non-colluding
    /// dealer; `c` is uniform because `r` is.
    pub fn truncate(&mut self, x: &[R64], divisor: u64) -> Result<Vec<R64>> {
        self.truncate_owned(x.to_vec(), divisor)
    }

    /// [`Party::truncate`] masking `x`'s buffer in place.
    pub(crate) fn truncate_owned(&mut self, mut masked: Vec<R64>, divisor: u64) -> Result<Vec<R64>> {
        if !needs_truncation(divisor)? {
            return Ok(masked);
        }
        let req = Request::Trunc { len: masked.len(), divisor };
        req.validate()?;
        let (mut share, explicit) = self.material(&req)?;
        let Share::Trunc(t) = &share else { unreachable!("truncation request") };
        // A multiple of the divisor, so removing it after the division is exact.
        let bias_q = R64(BIAS / divisor);
        let bias = if self.id() == 0 { bias_q * R64(divisor) } else { R64::ZERO };
        kernels::for_chunks_mut(&mut masked, |o, m| m.iter_mut().zip(&t.r[o..]).for_each(|(v, &r)| *v += r + bias));
        let mut out = self.open_owned(masked)?;
        self.receive_explicit(&mut share, explicit)?;
        let Share::Trunc(t) = share else { unreachable!("truncation request") };
        let wrap_unit = R64(((1u128 << 64) / divisor as u128) as u64);
        let first = self.id() == 0;
        let div = Divisor::new(divisor);
        kernels::for_chunks_mut(&mut out, |o, out| {
            for (c, (&q, &m)) in out.iter_mut().zip(t.quotient[o..].iter().zip(&t.msb[o..])) {
                *c = quotient_share(c.msb(), div.of(c.0), q, m, wrap_unit, bias_q, first);
            }
        });
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
