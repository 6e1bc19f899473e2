//! Kernels over contiguous row-major buffers of ring elements.
//!
//! Shapes are checked with `assert!`: callers (protocol, bindings) validate
//! user input first and turn mistakes into errors; a failed assert here is a bug.

use crate::R64;
use rayon::prelude::*;

/// Below this many elements, element-wise kernels stay on one thread.
const PAR_MIN: usize = 1 << 15;

fn zip_map(a: &[R64], b: &[R64], f: impl Fn(R64, R64) -> R64 + Sync) -> Vec<R64> {
    assert_eq!(a.len(), b.len(), "element-wise kernel on buffers of different lengths");
    if a.len() < PAR_MIN {
        a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
    } else {
        a.par_iter().zip(b.par_iter()).with_min_len(PAR_MIN / 4).map(|(&x, &y)| f(x, y)).collect()
    }
}

fn zip_assign(acc: &mut [R64], b: &[R64], f: impl Fn(&mut R64, R64) + Sync) {
    assert_eq!(acc.len(), b.len(), "element-wise kernel on buffers of different lengths");
    if acc.len() < PAR_MIN {
        acc.iter_mut().zip(b).for_each(|(x, &y)| f(x, y));
    } else {
        acc.par_iter_mut().zip(b.par_iter()).with_min_len(PAR_MIN / 4).for_each(|(x, &y)| f(x, y));
    }
}

pub fn add(a: &[R64], b: &[R64]) -> Vec<R64> {
    zip_map(a, b, |x, y| x + y)
}
pub fn sub(a: &[R64], b: &[R64]) -> Vec<R64> {
    zip_map(a, b, |x, y| x - y)
}
/// Element-wise product.
pub fn mul(a: &[R64], b: &[R64]) -> Vec<R64> {
    zip_map(a, b, |x, y| x * y)
}
pub fn neg(a: &[R64]) -> Vec<R64> {
    a.iter().map(|&x| -x).collect()
}
/// Product with a public ring constant.
pub fn scale(a: &[R64], k: R64) -> Vec<R64> {
    a.iter().map(|&x| x * k).collect()
}
pub fn add_assign(acc: &mut [R64], b: &[R64]) {
    zip_assign(acc, b, |x, y| *x += y)
}
pub fn sub_assign(acc: &mut [R64], b: &[R64]) {
    zip_assign(acc, b, |x, y| *x -= y)
}
pub fn mul_assign(acc: &mut [R64], b: &[R64]) {
    zip_assign(acc, b, |x, y| *x *= y)
}

/// Sum along `axis` of a row-major tensor of `shape`; the axis is removed.
pub fn sum_axis(a: &[R64], shape: &[usize], axis: usize) -> Vec<R64> {
    assert!(axis < shape.len(), "axis {axis} out of range for shape {shape:?}");
    assert_eq!(a.len(), shape.iter().product::<usize>(), "buffer does not match shape");
    let outer: usize = shape[..axis].iter().product();
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = vec![R64::ZERO; outer * inner];
    for o in 0..outer {
        let dst = &mut out[o * inner..(o + 1) * inner];
        for l in 0..len {
            let src = &a[(o * len + l) * inner..(o * len + l + 1) * inner];
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
        }
    }
    out
}

/// Transpose of a row-major `rows x cols` matrix.
pub fn transpose(a: &[R64], rows: usize, cols: usize) -> Vec<R64> {
    assert_eq!(a.len(), rows * cols, "buffer does not match shape");
    let mut out = vec![R64::ZERO; a.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = a[r * cols + c];
        }
    }
    out
}

/// `a (m x k) · b (k x n)` in Z_2^64.
pub fn matmul(a: &[R64], b: &[R64], m: usize, k: usize, n: usize) -> Vec<R64> {
    let mut out = vec![R64::ZERO; m * n];
    matmul_acc(a, b, m, k, n, &mut out);
    out
}

/// `out += a (m x k) · b (k x n)` in Z_2^64.
pub fn matmul_acc(a: &[R64], b: &[R64], m: usize, k: usize, n: usize, out: &mut [R64]) {
    assert_eq!(a.len(), m * k, "matmul: left operand is not {m}x{k}");
    assert_eq!(b.len(), k * n, "matmul: right operand is not {k}x{n}");
    assert_eq!(out.len(), m * n, "matmul: output is not {m}x{n}");
    if n == 0 {
        return;
    }
    out.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for p in 0..k {
            let aip = a[i * k + p];
            let brow = &b[p * n..(p + 1) * n];
            row.iter_mut().zip(brow).for_each(|(o, &bv)| *o += aip * bv);
        }
    });
}

/// Batched matmul: `batch` independent products `(m x k) · (k x n)`.
pub fn bmm(a: &[R64], b: &[R64], batch: usize, m: usize, k: usize, n: usize) -> Vec<R64> {
    assert_eq!(a.len(), batch * m * k, "bmm: left operand is not {batch}x{m}x{k}");
    assert_eq!(b.len(), batch * k * n, "bmm: right operand is not {batch}x{k}x{n}");
    let mut out = vec![R64::ZERO; batch * m * n];
    for t in 0..batch {
        matmul_acc(
            &a[t * m * k..(t + 1) * m * k],
            &b[t * k * n..(t + 1) * k * n],
            m,
            k,
            n,
            &mut out[t * m * n..(t + 1) * m * n],
        );
    }
    out
}

/// Geometry of a 2-d convolution (as `torch.nn.functional.conv2d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams { stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1 }
    }
}

impl Conv2dParams {
    /// Output shape `[N, O, OH, OW]` for input `[N, C, H, W]` and weight `[O, C/groups, KH, KW]`,
    /// or a message saying why the shapes do not fit.
    pub fn output_shape(&self, x: [usize; 4], w: [usize; 4]) -> Result<[usize; 4], String> {
        let [n, c, h, wd] = x;
        let [o, cg, kh, kw] = w;
        let g = self.groups;
        if g == 0 || self.stride.contains(&0) || self.dilation.contains(&0) {
            return Err("conv2d: groups, stride and dilation must be positive".into());
        }
        if c != cg * g || o % g != 0 {
            return Err(format!(
                "conv2d: input has {c} channels, weight expects {cg} per group x {g} groups \
                 and {o} output channels (must divide by groups)"
            ));
        }
        let span = |size: usize, pad: usize, k: usize, d: usize, s: usize| -> Option<usize> {
            let eff = d * (k.checked_sub(1)?) + 1;
            (size + 2 * pad).checked_sub(eff).map(|r| r / s + 1)
        };
        match (
            span(h, self.padding[0], kh, self.dilation[0], self.stride[0]),
            span(wd, self.padding[1], kw, self.dilation[1], self.stride[1]),
        ) {
            (Some(oh), Some(ow)) => Ok([n, o, oh, ow]),
            _ => Err(format!("conv2d: kernel {kh}x{kw} does not fit input {h}x{wd} with padding {:?}", self.padding)),
        }
    }
}

/// im2col for one image and one group: rows are `(c, ki, kj)`, columns output positions.
fn im2col(img: &[R64], c: usize, h: usize, w: usize, kh: usize, kw: usize, oh: usize, ow: usize, p: &Conv2dParams) -> Vec<R64> {
    let mut cols = vec![R64::ZERO; c * kh * kw * oh * ow];
    for ch in 0..c {
        for ki in 0..kh {
            for kj in 0..kw {
                let row = (ch * kh + ki) * kw + kj;
                let dst = &mut cols[row * oh * ow..(row + 1) * oh * ow];
                for oi in 0..oh {
                    let ii = (oi * p.stride[0] + ki * p.dilation[0]) as isize - p.padding[0] as isize;
                    if ii < 0 || ii >= h as isize {
                        continue;
                    }
                    for oj in 0..ow {
                        let jj = (oj * p.stride[1] + kj * p.dilation[1]) as isize - p.padding[1] as isize;
                        if jj >= 0 && jj < w as isize {
                            dst[oi * ow + oj] = img[(ch * h + ii as usize) * w + jj as usize];
                        }
                    }
                }
            }
        }
    }
    cols
}

/// 2-d convolution (cross-correlation, as torch) via im2col + ring matmul.
/// Returns the output and its shape `[N, O, OH, OW]`.
pub fn conv2d(x: &[R64], x_shape: [usize; 4], w: &[R64], w_shape: [usize; 4], p: &Conv2dParams) -> (Vec<R64>, [usize; 4]) {
    let out_shape = p.output_shape(x_shape, w_shape).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(x.len(), x_shape.iter().product::<usize>(), "conv2d: input buffer does not match shape");
    assert_eq!(w.len(), w_shape.iter().product::<usize>(), "conv2d: weight buffer does not match shape");
    let [n, c, h, wd] = x_shape;
    let [o, cg, kh, kw] = w_shape;
    let [_, _, oh, ow] = out_shape;
    let g = p.groups;
    let og = o / g;
    let mut out = vec![R64::ZERO; n * o * oh * ow];
    out.par_chunks_mut((o * oh * ow).max(1)).enumerate().for_each(|(img_idx, out_img)| {
        for grp in 0..g {
            let img = &x[(img_idx * c + grp * cg) * h * wd..(img_idx * c + (grp + 1) * cg) * h * wd];
            let cols = im2col(img, cg, h, wd, kh, kw, oh, ow, p);
            let wg = &w[grp * og * cg * kh * kw..(grp + 1) * og * cg * kh * kw];
            let dst = &mut out_img[grp * og * oh * ow..(grp + 1) * og * oh * ow];
            matmul_acc(wg, &cols, og, cg * kh * kw, oh * ow, dst);
        }
    });
    (out, out_shape)
}
