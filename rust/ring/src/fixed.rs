//! Fixed-point codec: reals ↔ Z_2^64 as `round(x · scale)` in two's complement.
//!
//! The scale is `2^frac_bits` (default 16 bits, ≈ 4.8 decimal digits, finer than
//! PySyft 0.2's `base=10, precision_fractional=3`) or `10^digits` for PySyft's decimal form.
//! Decoding splits quotient and remainder (Euclidean), so negative values decode
//! exactly — unlike a floor-division decoder, which is off by one unit for some negatives.

use crate::R64;
use std::fmt;

pub const DEFAULT_FRAC_BITS: u32 = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedPoint {
    base: u32,
    precision: u32,
    scale: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FixedPointError {
    BadPrecision { base: u32, precision: u32 },
    NotFinite { index: usize },
    OutOfRange { index: usize, value: f64, limit: f64 },
}

impl fmt::Display for FixedPointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FixedPointError::BadPrecision { base, precision } => write!(
                f,
                "unsupported fixed-point precision base={base} precision_fractional={precision}: \
                 use base 2 with 0..=40 fractional bits or base 10 with 0..=12 digits"
            ),
            FixedPointError::NotFinite { index } => {
                write!(f, "element {index} is NaN or infinite and has no fixed-point encoding")
            }
            FixedPointError::OutOfRange { index, value, limit } => write!(
                f,
                "element {index} = {value} is outside the fixed-point range (|x| < {limit}); \
                 use fewer fractional bits or rescale the data"
            ),
        }
    }
}
impl std::error::Error for FixedPointError {}

impl Default for FixedPoint {
    fn default() -> Self {
        FixedPoint::binary(DEFAULT_FRAC_BITS).expect("default precision is valid")
    }
}

impl FixedPoint {
    /// `scale = 2^frac_bits`.
    pub fn binary(frac_bits: u32) -> Result<Self, FixedPointError> {
        Self::new(2, frac_bits)
    }
    /// `scale = 10^digits` (PySyft's `base=10, precision_fractional=digits`).
    pub fn decimal(digits: u32) -> Result<Self, FixedPointError> {
        Self::new(10, digits)
    }
    pub fn new(base: u32, precision: u32) -> Result<Self, FixedPointError> {
        let ok = match base {
            2 => precision <= 40,
            10 => precision <= 12,
            _ => false,
        };
        if !ok {
            return Err(FixedPointError::BadPrecision { base, precision });
        }
        Ok(FixedPoint { base, precision, scale: (base as u64).pow(precision) })
    }
    pub fn base(&self) -> u32 {
        self.base
    }
    pub fn precision(&self) -> u32 {
        self.precision
    }
    pub fn scale(&self) -> u64 {
        self.scale
    }
    /// Largest magnitude that encodes without wrapping.
    pub fn limit(&self) -> f64 {
        (2f64).powi(63) / self.scale as f64
    }

    pub fn encode(&self, x: &[f64]) -> Result<Vec<R64>, FixedPointError> {
        let scale = self.scale as f64;
        let lim = 2f64.powi(63);
        x.iter()
            .enumerate()
            .map(|(index, &v)| {
                if !v.is_finite() {
                    return Err(FixedPointError::NotFinite { index });
                }
                let s = (v * scale).round();
                if s.abs() >= lim {
                    return Err(FixedPointError::OutOfRange { index, value: v, limit: self.limit() });
                }
                Ok(R64::from_i64(s as i64))
            })
            .collect()
    }

    pub fn decode(&self, x: &[R64]) -> Vec<f64> {
        let scale = self.scale as i64;
        let fscale = self.scale as f64;
        x.iter()
            .map(|v| {
                let v = v.to_i64();
                if v.unsigned_abs() < 1 << 53 {
                    // Both operands are exact, so the quotient is correctly rounded.
                    v as f64 / fscale
                } else {
                    // Euclidean split: remainder in [0, scale), each part converts exactly.
                    v.div_euclid(scale) as f64 + v.rem_euclid(scale) as f64 / fscale
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn negatives_decode_exactly() {
        // A floor-division decoder yields -2.0 for -1.5 and -1.0 for -0.25.
        let fp = FixedPoint::default();
        for v in [-1.5, -0.25, -1.0 / 65536.0, -3.0, -12345.6789] {
            let d = fp.decode(&fp.encode(&[v]).unwrap())[0];
            assert!((d - v).abs() <= 0.5 / 65536.0, "{v} decoded as {d}");
        }
        let dec = FixedPoint::decimal(3).unwrap();
        assert_eq!(dec.decode(&dec.encode(&[-1.5, -0.001, -2.25]).unwrap()), vec![-1.5, -0.001, -2.25]);
    }

    #[test]
    fn rejects_nan_and_overflow() {
        let fp = FixedPoint::default();
        assert!(matches!(fp.encode(&[f64::NAN]), Err(FixedPointError::NotFinite { index: 0 })));
        assert!(matches!(fp.encode(&[1.0, 1e300]), Err(FixedPointError::OutOfRange { index: 1, .. })));
        assert!(FixedPoint::new(3, 2).is_err());
    }

    proptest! {
        #[test]
        fn roundtrip_within_half_ulp(v in -1e9f64..1e9, bits in 0u32..=32) {
            let fp = FixedPoint::binary(bits).unwrap();
            let d = fp.decode(&fp.encode(&[v]).unwrap())[0];
            prop_assert!((d - v).abs() <= 0.5 / fp.scale() as f64 + 1e-9 * v.abs());
        }

        #[test]
        fn decode_is_exact_on_ring_values(raw in any::<i64>(), bits in 0u32..=40) {
            let fp = FixedPoint::binary(bits).unwrap();
            let d = fp.decode(&[R64::from_i64(raw)])[0];
            // Re-encoding what we decoded gives back the same ring element whenever it is representable.
            let exact = (raw as i128) as f64 / fp.scale() as f64;
            prop_assert!((d - exact).abs() <= exact.abs() * 1e-15);
            prop_assert_eq!(d.is_sign_negative() && d != 0.0, raw < 0);
        }
    }
}
