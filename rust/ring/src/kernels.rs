//! Kernels over contiguous row-major buffers of ring elements.
//!
//! Shapes are checked with `assert!`: callers (protocol, bindings) validate
//! user input first and turn mistakes into errors; a failed assert here is a bug.
//! Sizes derived from shapes are another matter: a peer chooses the shapes, and an
//! output of `m·n` elements may not fit in memory (or in `usize`). The `try_` kernels
//! ([`try_matmul`], [`try_bmm`], [`try_conv2d`]) compute every size with checked
//! arithmetic and allocate fallibly ([`try_zeroed`]), so such a request is a
//! [`SizeError`], never a panic or the abort of `handle_alloc_error`.

use crate::gemm::{gemm_acc, View};
use crate::{as_u64, as_u64_mut, R64};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// A size that overflows `usize` (or `isize::MAX` bytes), or an allocation the system refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError(pub String);

impl std::fmt::Display for SizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SizeError {}

/// The product of `dims`, or an error naming `what` when it overflows `usize`.
pub fn checked_numel(dims: &[usize], what: &str) -> Result<usize, SizeError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| SizeError(format!("{what}: {dims:?} has more elements than fit in memory addresses")))
}

/// `len` zeroed ring elements, or an error when the size overflows or the allocator refuses
/// (where `vec![R64::ZERO; len]` would abort the process in `handle_alloc_error`).
/// Zeroed pages from the allocator (calloc), exactly as `vec!` would get them.
pub fn try_zeroed(len: usize, what: &str) -> Result<Vec<R64>, SizeError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<R64>(len)
        .map_err(|_| SizeError(format!("{what}: {len} elements overflow the address space")))?;
    // SAFETY: `layout` has non-zero size (len > 0 and R64 is 8 bytes).
    let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut R64;
    if p.is_null() {
        return Err(SizeError(format!("{what}: cannot allocate {} bytes ({len} elements)", layout.size())));
    }
    // SAFETY: `p` was allocated by the global allocator with the layout of `[R64; len]`,
    // and all-zero bits are a valid R64 (a transparent u64), so all `len` elements are initialised.
    Ok(unsafe { Vec::from_raw_parts(p, len, len) })
}

/// Below this many elements, element-wise kernels stay on one thread.
const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task of element-wise kernels (256 KiB per operand).
const PAR_CHUNK: usize = 1 << 15;

/// Whether element-wise work over `len` elements goes to the thread pool: only when it is
/// large and the pool has more than one thread. With one thread the pool would still run
/// it on its own thread: a hand-off and a wake-up per call, for nothing.
pub fn parallel(len: usize) -> bool {
    len >= PAR_MIN && rayon::current_num_threads() > 1
}

/// Runs `f` compiled for the widest vector level the CPU has (AVX-512, AVX2 or
/// the baseline, chosen at run time; see [`crate::simd`]): `f` is inlined into a
/// function built for that level, so its loops vectorise.
#[inline(always)]
pub fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    crate::simd::run(f)
}

/// `f(offset, chunk)` over consecutive chunks of `out`, for the protocols' fused
/// element-wise passes: in parallel where [`parallel`] says so, each chunk under
/// [`with_simd`]. `offset` is the chunk's start in `out` (index the inputs with it).
pub fn for_chunks_mut<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    if !parallel(out.len()) {
        return with_simd(|| f(0, out));
    }
    out.par_chunks_mut(PAR_CHUNK).enumerate().for_each(|(i, c)| with_simd(|| f(i * PAR_CHUNK, c)));
}

/// `out[i] = f(a[i], b[i])`, compiled once per vector level (chosen at run
/// time, [`with_simd`]), so the loop auto-vectorises to 256- or 512-bit lanes
/// where the CPU has them without building the wheel for a newer CPU.
/// `WIDE`: up to AVX-512 (products: `vpmullq` against three `vpmuludq`);
/// otherwise up to AVX2 (add and sub measured no faster at 512 bits).
fn map2_seq<const WIDE: bool>(
    out: &mut [MaybeUninit<R64>],
    a: &[R64],
    b: &[R64],
    f: &(impl Fn(R64, R64) -> R64 + Sync),
) {
    let body = || {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            o.write(f(x, y));
        }
    };
    if WIDE {
        crate::simd::run(body)
    } else {
        crate::simd::run_narrow(body)
    }
}

/// `out = f(a, b)` element-wise, multi-threaded for large buffers.
fn map2<const WIDE: bool>(out: &mut [R64], a: &[R64], b: &[R64], f: impl Fn(R64, R64) -> R64 + Sync) {
    // SAFETY: `MaybeUninit<R64>` has the layout of `R64`, and `map2_uninit` only writes
    // initialised values, so `out` stays initialised.
    let out = unsafe { &mut *(out as *mut [R64] as *mut [MaybeUninit<R64>]) };
    map2_uninit::<WIDE>(out, a, b, f)
}

/// [`map2`] into possibly uninitialised memory: writes every element of `out`.
fn map2_uninit<const WIDE: bool>(
    out: &mut [MaybeUninit<R64>],
    a: &[R64],
    b: &[R64],
    f: impl Fn(R64, R64) -> R64 + Sync,
) {
    assert!(a.len() == b.len() && a.len() == out.len(), "element-wise kernel on buffers of different lengths");
    if !parallel(out.len()) {
        map2_seq::<WIDE>(out, a, b, &f);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK))
            .zip(b.par_chunks(PAR_CHUNK))
            .for_each(|((o, x), y)| map2_seq::<WIDE>(o, x, y, &f));
    }
}

/// A new vector `f(a, b)`, written once: no zero-fill first (8 MiB of `memset` per
/// 1024² result, and its cache misses, for values overwritten at once).
fn zip_map<const WIDE: bool>(a: &[R64], b: &[R64], f: impl Fn(R64, R64) -> R64 + Sync) -> Vec<R64> {
    assert_eq!(a.len(), b.len(), "element-wise kernel on buffers of different lengths");
    let mut out = Vec::with_capacity(a.len());
    map2_uninit::<WIDE>(&mut out.spare_capacity_mut()[..a.len()], a, b, f);
    // SAFETY: `map2_uninit` wrote all `a.len()` elements, within the capacity.
    unsafe { out.set_len(a.len()) };
    out
}

/// `acc = f(acc, b)` in place (same dispatch as [`map2_seq`]).
fn zip_assign<const WIDE: bool>(acc: &mut [R64], b: &[R64], f: impl Fn(R64, R64) -> R64 + Sync) {
    assert_eq!(acc.len(), b.len(), "element-wise kernel on buffers of different lengths");
    fn seq<const WIDE: bool>(acc: &mut [R64], b: &[R64], f: &(impl Fn(R64, R64) -> R64 + Sync)) {
        let body = || {
            for (o, &y) in acc.iter_mut().zip(b) {
                *o = f(*o, y);
            }
        };
        if WIDE {
            crate::simd::run(body)
        } else {
            crate::simd::run_narrow(body)
        }
    }
    if !parallel(acc.len()) {
        seq::<WIDE>(acc, b, &f);
    } else {
        acc.par_chunks_mut(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)).for_each(|(o, y)| seq::<WIDE>(o, y, &f));
    }
}

pub fn add(a: &[R64], b: &[R64]) -> Vec<R64> {
    zip_map::<false>(a, b, |x, y| x + y)
}
pub fn sub(a: &[R64], b: &[R64]) -> Vec<R64> {
    zip_map::<false>(a, b, |x, y| x - y)
}
/// `out = a + b` into an existing buffer.
pub fn add_into(out: &mut [R64], a: &[R64], b: &[R64]) {
    map2::<false>(out, a, b, |x, y| x + y)
}
/// `out = a − b` into an existing buffer.
pub fn sub_into(out: &mut [R64], a: &[R64], b: &[R64]) {
    map2::<false>(out, a, b, |x, y| x - y)
}
/// Element-wise product.
pub fn mul(a: &[R64], b: &[R64]) -> Vec<R64> {
    zip_map::<true>(a, b, |x, y| x * y)
}
pub fn neg(a: &[R64]) -> Vec<R64> {
    // The second operand is ignored; reusing zip_map keeps one dispatch path.
    zip_map::<false>(a, a, |x, _| -x)
}
/// Product with a public ring constant.
pub fn scale(a: &[R64], k: R64) -> Vec<R64> {
    zip_map::<true>(a, a, move |x, _| x * k)
}
pub fn add_assign(acc: &mut [R64], b: &[R64]) {
    zip_assign::<false>(acc, b, |x, y| x + y)
}
pub fn sub_assign(acc: &mut [R64], b: &[R64]) {
    zip_assign::<false>(acc, b, |x, y| x - y)
}
pub fn mul_assign(acc: &mut [R64], b: &[R64]) {
    zip_assign::<true>(acc, b, |x, y| x * y)
}

/// Sum along `axis` of a row-major tensor of `shape`; the axis is removed.
///
/// Viewed as `[outer, len, inner]`: each output row `o` accumulates `len`
/// contiguous input rows of `inner` elements (unit stride, vectorisable).
/// Parallel over output rows, or over column chunks of a row when there are
/// few rows; a sum over the last axis (`inner == 1`) is a parallel reduction.
pub fn sum_axis(a: &[R64], shape: &[usize], axis: usize) -> Vec<R64> {
    assert!(axis < shape.len(), "axis {axis} out of range for shape {shape:?}");
    assert_eq!(a.len(), shape.iter().product::<usize>(), "buffer does not match shape");
    let outer: usize = shape[..axis].iter().product();
    let len = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = vec![R64::ZERO; outer * inner];
    if out.is_empty() || len == 0 {
        return out;
    }
    let big = a.len() >= PAR_MIN;
    if inner == 1 {
        let row_sum = |o: usize| -> R64 {
            let row = &a[o * len..(o + 1) * len];
            if big && outer < 4 {
                row.par_chunks(PAR_CHUNK).map(|c| c.iter().copied().sum::<R64>()).sum()
            } else {
                row.iter().copied().sum()
            }
        };
        if big {
            out.par_iter_mut().enumerate().with_min_len(64).for_each(|(o, d)| *d = row_sum(o));
        } else {
            out.iter_mut().enumerate().for_each(|(o, d)| *d = row_sum(o));
        }
        return out;
    }
    let block = |o: usize, j0: usize, dst: &mut [R64]| {
        for l in 0..len {
            let s = (o * len + l) * inner + j0;
            add_assign_seq(dst, &a[s..s + dst.len()]);
        }
    };
    if !big {
        out.chunks_mut(inner).enumerate().for_each(|(o, row)| block(o, 0, row));
    } else {
        // Column chunks small enough that a few rows' worth stays in L1/L2.
        let chunk = inner.min(4096);
        out.par_chunks_mut(inner).enumerate().for_each(|(o, row)| {
            row.par_chunks_mut(chunk).enumerate().for_each(|(c, dst)| block(o, c * chunk, dst));
        });
    }
    out
}

/// Single-threaded `acc += b` (vectorised at the run-time level, at most AVX2).
fn add_assign_seq(acc: &mut [R64], b: &[R64]) {
    crate::simd::run_narrow(|| {
        for (o, &y) in acc.iter_mut().zip(b) {
            *o += y;
        }
    })
}

/// Side of the square tiles of [`transpose`]: a 32 x 32 tile of u64 (8 KiB)
/// read by rows and written by columns stays in L1, so neither side pays a
/// cache miss per element.
const TILE: usize = 32;

/// Transpose of a row-major `rows x cols` matrix.
///
/// Cache-blocked in [`TILE`]-square tiles, parallel over bands of output rows.
pub fn transpose(a: &[R64], rows: usize, cols: usize) -> Vec<R64> {
    assert_eq!(a.len(), rows * cols, "buffer does not match shape");
    let mut out = vec![R64::ZERO; a.len()];
    transpose_into(a, rows, cols, &mut out, a.len() >= PAR_MIN);
    out
}

fn transpose_into(a: &[R64], rows: usize, cols: usize, out: &mut [R64], par: bool) {
    if out.is_empty() {
        return;
    }
    // out is cols x rows; a band is TILE output rows (= TILE input columns).
    let band = |bi: usize, dst: &mut [R64]| {
        let c0 = bi * TILE;
        let nc = dst.len() / rows;
        for r0 in (0..rows).step_by(TILE) {
            let nr = TILE.min(rows - r0);
            for c in 0..nc {
                let drow = &mut dst[c * rows + r0..c * rows + r0 + nr];
                for (r, d) in drow.iter_mut().enumerate() {
                    *d = a[(r0 + r) * cols + c0 + c];
                }
            }
        }
    };
    if par {
        out.par_chunks_mut(TILE * rows).enumerate().for_each(|(bi, dst)| band(bi, dst));
    } else {
        out.chunks_mut(TILE * rows).enumerate().for_each(|(bi, dst)| band(bi, dst));
    }
}

/// Permutes the axes of a row-major tensor of `shape` (as `torch.permute`):
/// output axis `i` is input axis `axes[i]`. Returns the permuted buffer,
/// whose shape is `[shape[axes[0]], shape[axes[1]], ...]`.
///
/// Adjacent axes that stay adjacent are merged first, so e.g. NCHW -> NHWC
/// is a batch of 2-d transposes. When the innermost axis stays innermost,
/// rows are copied whole; a batched 2-d transpose uses the tiled
/// [`transpose`]; anything else is a strided gather, parallel over output rows.
pub fn permute(a: &[R64], shape: &[usize], axes: &[usize]) -> Vec<R64> {
    let nd = shape.len();
    assert_eq!(axes.len(), nd, "permute: {} axes for a {nd}-d tensor", axes.len());
    let mut seen = vec![false; nd];
    for &ax in axes {
        assert!(ax < nd && !seen[ax], "permute: {axes:?} is not a permutation of 0..{nd}");
        seen[ax] = true;
    }
    assert_eq!(a.len(), shape.iter().product::<usize>(), "buffer does not match shape");
    if a.is_empty() {
        return Vec::new();
    }
    // Drop size-1 axes (they do not move data): `red[i]` is the rank of
    // input axis `axes[i]` among the kept input axes.
    let rank: Vec<usize> = (0..nd).map(|ax| (0..ax).filter(|&i| shape[i] != 1).count()).collect();
    let red: Vec<usize> = axes.iter().filter(|&&ax| shape[ax] != 1).map(|&ax| rank[ax]).collect();
    let red_shape: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
    // Merge runs of output axes that are consecutive input axes into one axis.
    let mut groups: Vec<(usize, usize)> = Vec::new(); // (first input axis, last input axis)
    for &ax in &red {
        match groups.last_mut() {
            Some(g) if g.1 + 1 == ax => g.1 = ax,
            _ => groups.push((ax, ax)),
        }
    }
    // Merged input axes, in input order, with their sizes.
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| groups[g].0);
    let in_shape: Vec<usize> = order.iter().map(|&g| red_shape[groups[g].0..=groups[g].1].iter().product()).collect();
    // perm[i] = merged input axis of merged output axis i.
    let mut perm = vec![0; groups.len()];
    for (pos, &g) in order.iter().enumerate() {
        perm[g] = pos;
    }
    let md = perm.len();
    if md <= 1 {
        return a.to_vec();
    }
    // Batched 2-d transpose: [B, X, Y] -> [B, Y, X].
    if md >= 2 && perm[..md - 2].iter().enumerate().all(|(i, &p)| i == p) && perm[md - 2] == md - 1 {
        let (x, y) = (in_shape[md - 2], in_shape[md - 1]);
        let batch: usize = in_shape[..md - 2].iter().product();
        let mut out = vec![R64::ZERO; a.len()];
        let one = |t: usize, dst: &mut [R64], par: bool| transpose_into(&a[t * x * y..(t + 1) * x * y], x, y, dst, par);
        if x * y >= PAR_MIN || a.len() < PAR_MIN {
            out.chunks_mut(x * y).enumerate().for_each(|(t, dst)| one(t, dst, x * y >= PAR_MIN));
        } else {
            out.par_chunks_mut(x * y).enumerate().for_each(|(t, dst)| one(t, dst, false));
        }
        debug_assert_eq!(batch * x * y, a.len());
        return out;
    }
    let mut in_strides = vec![1usize; md];
    for i in (0..md.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * in_shape[i + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| in_shape[p]).collect();
    let out_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let last = out_shape[md - 1];
    let last_stride = out_strides[md - 1];
    let mut out = vec![R64::ZERO; a.len()];
    let fill_row = |row_idx: usize, dst: &mut [R64]| {
        // Input offset of the row's first element: decompose row_idx over the outer output axes.
        let mut rem = row_idx;
        let mut base = 0;
        for i in (0..md - 1).rev() {
            base += (rem % out_shape[i]) * out_strides[i];
            rem /= out_shape[i];
        }
        if last_stride == 1 {
            dst.copy_from_slice(&a[base..base + last]);
        } else {
            for (j, d) in dst.iter_mut().enumerate() {
                *d = a[base + j * last_stride];
            }
        }
    };
    if a.len() < PAR_MIN {
        out.chunks_mut(last).enumerate().for_each(|(r, dst)| fill_row(r, dst));
    } else {
        out.par_chunks_mut(last).enumerate().with_min_len(16).for_each(|(r, dst)| fill_row(r, dst));
    }
    out
}

/// `a (m x k) · b (k x n)` in Z_2^64. Panics where [`try_matmul`] returns an error.
pub fn matmul(a: &[R64], b: &[R64], m: usize, k: usize, n: usize) -> Vec<R64> {
    try_matmul(a, b, m, k, n).unwrap_or_else(|e| panic!("{e}"))
}

/// `a (m x k) · b (k x n)` in Z_2^64, or a [`SizeError`] when the `m·n` output does not fit.
pub fn try_matmul(a: &[R64], b: &[R64], m: usize, k: usize, n: usize) -> Result<Vec<R64>, SizeError> {
    checked_numel(&[m, k], "matmul: left operand")?;
    checked_numel(&[k, n], "matmul: right operand")?;
    let mut out = try_zeroed(checked_numel(&[m, n], "matmul: output")?, "matmul: output")?;
    matmul_acc(a, b, m, k, n, &mut out);
    Ok(out)
}

/// `out += a (m x k) · b (k x n)` in Z_2^64.
///
/// Packed, cache-blocked and multi-threaded (rayon's pool), with an AVX2
/// micro-kernel chosen at run time; see the `gemm` module for the design.
pub fn matmul_acc(a: &[R64], b: &[R64], m: usize, k: usize, n: usize, out: &mut [R64]) {
    assert_eq!(a.len(), m * k, "matmul: left operand is not {m}x{k}");
    assert_eq!(b.len(), k * n, "matmul: right operand is not {k}x{n}");
    assert_eq!(out.len(), m * n, "matmul: output is not {m}x{n}");
    let a = View { data: as_u64(a), rs: k, cs: 1 };
    let b = View { data: as_u64(b), rs: n, cs: 1 };
    gemm_acc(a, b, m, k, n, as_u64_mut(out), n);
}

/// Batched matmul: `batch` independent products `(m x k) · (k x n)`.
///
/// Parallel over the batch; each product is itself the parallel packed
/// matmul, so one large product and many small ones both fill the pool.
/// Panics where [`try_bmm`] returns an error.
pub fn bmm(a: &[R64], b: &[R64], batch: usize, m: usize, k: usize, n: usize) -> Vec<R64> {
    try_bmm(a, b, batch, m, k, n).unwrap_or_else(|e| panic!("{e}"))
}

/// [`bmm`], or a [`SizeError`] when the `batch·m·n` output does not fit.
pub fn try_bmm(a: &[R64], b: &[R64], batch: usize, m: usize, k: usize, n: usize) -> Result<Vec<R64>, SizeError> {
    let la = checked_numel(&[batch, m, k], "bmm: left operand")?;
    let lb = checked_numel(&[batch, k, n], "bmm: right operand")?;
    assert_eq!(a.len(), la, "bmm: left operand is not {batch}x{m}x{k}");
    assert_eq!(b.len(), lb, "bmm: right operand is not {batch}x{k}x{n}");
    let mut out = try_zeroed(checked_numel(&[batch, m, n], "bmm: output")?, "bmm: output")?;
    if out.is_empty() {
        return Ok(out);
    }
    out.par_chunks_mut(m * n).enumerate().for_each(|(t, dst)| {
        matmul_acc(&a[t * m * k..(t + 1) * m * k], &b[t * k * n..(t + 1) * k * n], m, k, n, dst);
    });
    Ok(out)
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
        // Checked: padding, dilation and kernel sizes come from a peer (2^62 must not overflow).
        let padded = |size: usize, pad: usize| pad.checked_mul(2).and_then(|p| p.checked_add(size));
        let eff = |k: usize, d: usize| k.checked_sub(1).and_then(|k1| d.checked_mul(k1)).and_then(|e| e.checked_add(1));
        let (Some(ph), Some(pw), Some(eh), Some(ew)) = (
            padded(h, self.padding[0]),
            padded(wd, self.padding[1]),
            eff(kh, self.dilation[0]),
            eff(kw, self.dilation[1]),
        ) else {
            return Err(format!(
                "conv2d: padding {:?}, dilation {:?} or kernel {kh}x{kw} overflow the index range",
                self.padding, self.dilation
            ));
        };
        match (ph.checked_sub(eh), pw.checked_sub(ew)) {
            (Some(rh), Some(rw)) => {
                let out = [n, o, rh / self.stride[0] + 1, rw / self.stride[1] + 1];
                checked_numel(&out, "conv2d: output").map_err(|e| e.0)?;
                Ok(out)
            }
            _ => Err(format!("conv2d: kernel {kh}x{kw} does not fit input {h}x{wd} with padding {:?}", self.padding)),
        }
    }
}

/// im2col for one image and one group: rows are `(c, ki, kj)`, columns output positions.
///
/// Per (row, output row) the valid output columns are computed once, so the
/// inner loop has no bounds tests; with horizontal stride 1 it is a memcpy.
fn im2col(
    img: &[R64],
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    p: &Conv2dParams,
    cols: &mut Vec<R64>,
) -> Result<(), SizeError> {
    // Reused buffer: zero it (padding positions are never written below). Its size was
    // checked by `try_conv2d`; the allocation may still be refused.
    let len = c * kh * kw * oh * ow;
    cols.clear();
    cols.try_reserve_exact(len)
        .map_err(|e| SizeError(format!("conv2d: cannot allocate the {len}-element im2col buffer: {e}")))?;
    cols.resize(len, R64::ZERO);
    let [sh, sw] = p.stride;
    let [ph, pw] = p.padding;
    let [dh, dw] = p.dilation;
    for ch in 0..c {
        for ki in 0..kh {
            for kj in 0..kw {
                let row = (ch * kh + ki) * kw + kj;
                let dst = &mut cols[row * oh * ow..(row + 1) * oh * ow];
                // Input column of output column oj is oj*sw + off - pw; valid oj in [lo, hi).
                let off = kj * dw;
                let lo = pw.saturating_sub(off).div_ceil(sw).min(ow);
                let hi = if w + pw > off { ((w + pw - off - 1) / sw + 1).min(ow) } else { 0 };
                for oi in 0..oh {
                    let ii = oi * sh + ki * dh;
                    if ii < ph || ii - ph >= h || lo >= hi {
                        continue;
                    }
                    let src = &img[(ch * h + ii - ph) * w..(ch * h + ii - ph + 1) * w];
                    let d = &mut dst[oi * ow + lo..oi * ow + hi];
                    let j0 = lo * sw + off - pw;
                    if sw == 1 {
                        d.copy_from_slice(&src[j0..j0 + d.len()]);
                    } else {
                        for (t, v) in d.iter_mut().enumerate() {
                            *v = src[j0 + t * sw];
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

thread_local! {
    // im2col buffer reused across images and calls: a fresh multi-MiB Vec per
    // image costs more in page faults than the copy itself. `take`/`set` keeps
    // this correct when rayon runs a nested task on the same thread.
    static COLS: std::cell::Cell<Vec<R64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// 2-d convolution (cross-correlation, as torch) via im2col + ring matmul.
/// Returns the output and its shape `[N, O, OH, OW]`. Panics where [`try_conv2d`] returns an error.
pub fn conv2d(
    x: &[R64],
    x_shape: [usize; 4],
    w: &[R64],
    w_shape: [usize; 4],
    p: &Conv2dParams,
) -> (Vec<R64>, [usize; 4]) {
    try_conv2d(x, x_shape, w, w_shape, p).unwrap_or_else(|e| panic!("{e}"))
}

/// [`conv2d`], or a [`SizeError`] when the output or the im2col buffer (`C/groups·KH·KW·OH·OW`
/// elements per thread) overflows or cannot be allocated.
pub fn try_conv2d(
    x: &[R64],
    x_shape: [usize; 4],
    w: &[R64],
    w_shape: [usize; 4],
    p: &Conv2dParams,
) -> Result<(Vec<R64>, [usize; 4]), SizeError> {
    let out_shape = p.output_shape(x_shape, w_shape).map_err(SizeError)?;
    assert_eq!(Ok(x.len()), checked_numel(&x_shape, "conv2d: input"), "conv2d: input buffer does not match shape");
    assert_eq!(Ok(w.len()), checked_numel(&w_shape, "conv2d: weight"), "conv2d: weight buffer does not match shape");
    let [_, c, h, wd] = x_shape;
    let [o, cg, kh, kw] = w_shape;
    let [_, _, oh, ow] = out_shape;
    checked_numel(&[cg, kh, kw, oh, ow], "conv2d: im2col buffer")?;
    let g = p.groups;
    let og = o / g;
    let mut out = try_zeroed(checked_numel(&out_shape, "conv2d: output")?, "conv2d: output")?;
    out.par_chunks_mut((o * oh * ow).max(1)).enumerate().try_for_each(|(img_idx, out_img)| {
        for grp in 0..g {
            let img = &x[(img_idx * c + grp * cg) * h * wd..(img_idx * c + (grp + 1) * cg) * h * wd];
            let mut cols = COLS.with(|c| c.take());
            im2col(img, cg, h, wd, kh, kw, oh, ow, p, &mut cols)?;
            let wg = &w[grp * og * cg * kh * kw..(grp + 1) * og * cg * kh * kw];
            let dst = &mut out_img[grp * og * oh * ow..(grp + 1) * og * oh * ow];
            matmul_acc(wg, &cols, og, cg * kh * kw, oh * ow, dst);
            COLS.with(|c| c.set(cols));
        }
        Ok(())
    })?;
    Ok((out, out_shape))
}
