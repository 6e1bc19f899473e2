use bytemuck::{Pod, Zeroable};
use std::ops::{Add, AddAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// An element of Z_2^64. Every operation wraps by construction, so the
/// workspace can keep `overflow-checks = true` to catch stray plain `u64` math.
#[repr(transparent)]
#[derive(Copy, Clone, Default, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Pod, Zeroable)]
pub struct R64(pub u64);

impl R64 {
    pub const ZERO: R64 = R64(0);
    pub const ONE: R64 = R64(1);

    #[inline(always)]
    pub const fn from_i64(v: i64) -> R64 {
        R64(v as u64)
    }
    /// The two's-complement (signed) reading of the element.
    #[inline(always)]
    pub const fn to_i64(self) -> i64 {
        self.0 as i64
    }
    /// Most significant bit: 1 for "negative" elements in the signed reading.
    #[inline(always)]
    pub const fn msb(self) -> u64 {
        self.0 >> 63
    }
}

impl Add for R64 {
    type Output = R64;
    #[inline(always)]
    fn add(self, o: R64) -> R64 {
        R64(self.0.wrapping_add(o.0))
    }
}
impl Sub for R64 {
    type Output = R64;
    #[inline(always)]
    fn sub(self, o: R64) -> R64 {
        R64(self.0.wrapping_sub(o.0))
    }
}
impl Mul for R64 {
    type Output = R64;
    #[inline(always)]
    fn mul(self, o: R64) -> R64 {
        R64(self.0.wrapping_mul(o.0))
    }
}
impl Neg for R64 {
    type Output = R64;
    #[inline(always)]
    fn neg(self) -> R64 {
        R64(self.0.wrapping_neg())
    }
}
impl AddAssign for R64 {
    #[inline(always)]
    fn add_assign(&mut self, o: R64) {
        *self = *self + o;
    }
}
impl SubAssign for R64 {
    #[inline(always)]
    fn sub_assign(&mut self, o: R64) {
        *self = *self - o;
    }
}
impl MulAssign for R64 {
    #[inline(always)]
    fn mul_assign(&mut self, o: R64) {
        *self = *self * o;
    }
}
impl std::iter::Sum for R64 {
    fn sum<I: Iterator<Item = R64>>(iter: I) -> R64 {
        iter.fold(R64::ZERO, |a, b| a + b)
    }
}

/// Views `u64` memory (e.g. a numpy `uint64` buffer) as ring elements, without a copy.
pub fn as_ring(v: &[u64]) -> &[R64] {
    bytemuck::cast_slice(v)
}
pub fn as_ring_mut(v: &mut [u64]) -> &mut [R64] {
    bytemuck::cast_slice_mut(v)
}
pub fn as_u64(v: &[R64]) -> &[u64] {
    bytemuck::cast_slice(v)
}
pub fn as_u64_mut(v: &mut [R64]) -> &mut [u64] {
    bytemuck::cast_slice_mut(v)
}
