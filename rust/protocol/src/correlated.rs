//! Correlated randomness: what a party asks the dealer for, and how every share of it
//! is derived. This module is the single place that fixes the order of PRG draws, so
//! dealer and parties expand identical streams.
//!
//! Seed compression (as in CrypTen's TTP provider and SPDZ-style PRSS dealers): party i
//! holds a seed shared with the dealer and expands all its random components locally.
//! Only the *last* party receives an explicit correction — the components whose value
//! is fixed by the others (e.g. `c_last = a·b − Σ c_i` of a Beaver triple).

use crate::{ProtocolError, Result};
use syft_mpc_ring::kernels::{self, Conv2dParams};
use syft_mpc_ring::prg::Prg;
use syft_mpc_ring::R64;

/// Largest tensor (in elements) a single request may ask for (2 GiB of ring elements):
/// bounds what a malformed or hostile request can make the dealer allocate.
pub const MAX_REQUEST_ELEMENTS: usize = 1 << 28;

/// Most harmonics a Fourier series may have (a sigmoid needs 8).
pub const MAX_HARMONICS: usize = 64;
/// Largest divisor of a Fourier series' output (computed at 2^29, below a 2^30 bias).
pub const MAX_FOURIER_DIVISOR: u64 = 1 << 28;

/// Width of the chunks the comparison splits the 63 low bits into; 4 bits gives
/// 16 chunks (the top one 3 bits wide) and a 4-level AND tree.
pub(crate) const CHUNK_BITS: u32 = 4;
pub(crate) const CHUNKS: usize = 16;
/// Pairs combined on each level of the comparison tree (16 → 8 → 4 → 2 → 1 nodes).
pub(crate) const LEVEL_PAIRS: [usize; 4] = [8, 4, 2, 1];

/// A request for correlated randomness; parties and dealer issue the same sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Beaver triple for the element-wise product of `len` values.
    Mul { len: usize },
    /// Beaver triple for `batch` products `(m×k)·(k×n)`.
    Matmul { batch: usize, m: usize, k: usize, n: usize },
    /// Beaver triple for a conv2d of an `x_shape` input with a `w_shape` weight.
    Conv2d { x_shape: [usize; 4], w_shape: [usize; 4], params: Conv2dParams },
    /// Truncation (division by a public `divisor`) material for `len` values.
    Trunc { len: usize, divisor: u64 },
    /// Comparison material for `len` values against `thresholds` public thresholds each
    /// (one mask and one set of tables serve them all; with zero: 1), plus masks for
    /// `products` vectors of `thresholds·len` values to be multiplied by the bits in the
    /// same rounds (ReLU: 1, x itself; a tournament's select: the values and their indices).
    Compare { len: usize, thresholds: usize, products: usize },
    /// Trigonometric masks for a Fourier series of `len` values with `harmonics` terms
    /// (a mask `r` in Z_2^32 and shares of `cos(2πk·r/2^32)`, `sin(2πk·r/2^32)` in
    /// Z_2^32), and the material to divide the series by `divisor` into Z_2^64.
    Fourier { len: usize, harmonics: usize, divisor: u64 },
    /// The session is over.
    Bye,
}

fn checked_product(dims: &[usize]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).filter(|&p| p <= MAX_REQUEST_ELEMENTS).ok_or_else(|| {
        ProtocolError::Dealer(format!("request for a tensor of shape {dims:?} exceeds {MAX_REQUEST_ELEMENTS} elements"))
    })
}

impl Request {
    /// Checks sizes and geometry; the dealer calls this before allocating anything.
    pub fn validate(&self) -> Result<()> {
        match self {
            Request::Mul { len } | Request::Trunc { len, .. } => {
                checked_product(&[*len])?;
            }
            Request::Compare { len, thresholds, products } => {
                // The products' masks are the largest part: `len·thresholds·products` elements,
                // bounded like every tensor (a max-pool window's value and one-hot vector: 1 + kh·kw).
                if *thresholds == 0 {
                    return Err(ProtocolError::Dealer("a comparison with no threshold".into()));
                }
                checked_product(&[*len, *thresholds])?;
                checked_product(&[*len, *thresholds, *products])?;
            }
            Request::Fourier { len, harmonics, divisor } => {
                if !(1..=MAX_HARMONICS).contains(harmonics) {
                    return Err(ProtocolError::Dealer(format!(
                        "a Fourier series of {harmonics} harmonics (1 to {MAX_HARMONICS} are supported)"
                    )));
                }
                if !(1..=MAX_FOURIER_DIVISOR).contains(divisor) {
                    return Err(ProtocolError::Dealer(format!(
                        "a Fourier series divided by {divisor} (1 to 2^28 are supported)"
                    )));
                }
                checked_product(&[*len, 2 * harmonics])?;
            }
            Request::Matmul { batch, m, k, n } => {
                checked_product(&[*batch, *m, *k])?;
                checked_product(&[*batch, *k, *n])?;
                checked_product(&[*batch, *m, *n])?;
            }
            Request::Conv2d { x_shape, w_shape, params } => {
                checked_product(x_shape)?;
                checked_product(w_shape)?;
                let out = params.output_shape(*x_shape, *w_shape).map_err(ProtocolError::Shape)?;
                checked_product(&out)?;
            }
            Request::Bye => {}
        }
        if let Request::Trunc { divisor: 0, .. } = self {
            return Err(ProtocolError::Dealer("truncation by a divisor of 0".into()));
        }
        Ok(())
    }

    /// Little-endian wire form: a tag byte, then u64 fields.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, fields): (u8, Vec<u64>) = match self {
            Request::Mul { len } => (1, vec![*len as u64]),
            Request::Matmul { batch, m, k, n } => (2, vec![*batch as u64, *m as u64, *k as u64, *n as u64]),
            Request::Conv2d { x_shape, w_shape, params } => {
                let mut f: Vec<u64> = x_shape.iter().chain(w_shape).map(|&d| d as u64).collect();
                f.extend(params.stride.iter().chain(&params.padding).chain(&params.dilation).map(|&d| d as u64));
                f.push(params.groups as u64);
                (3, f)
            }
            Request::Trunc { len, divisor } => (4, vec![*len as u64, *divisor]),
            Request::Compare { len, thresholds, products } => {
                (5, vec![*len as u64, *thresholds as u64, *products as u64])
            }
            Request::Fourier { len, harmonics, divisor } => (6, vec![*len as u64, *harmonics as u64, *divisor]),
            Request::Bye => (0, vec![]),
        };
        let mut out = vec![tag];
        fields.iter().for_each(|f| out.extend_from_slice(&f.to_le_bytes()));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Request> {
        let bad = |why: &str| ProtocolError::Dealer(format!("malformed request: {why}"));
        let (&tag, rest) = bytes.split_first().ok_or_else(|| bad("empty message"))?;
        if rest.len() % 8 != 0 {
            return Err(bad("length is not a whole number of fields"));
        }
        let f: Vec<u64> = rest.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
        let want = match tag {
            0 => 0,
            1 => 1,
            2 => 4,
            3 => 15,
            4 => 2,
            5 | 6 => 3,
            _ => return Err(bad(&format!("unknown request kind {tag}"))),
        };
        if f.len() != want {
            return Err(bad(&format!("kind {tag} needs {want} fields, got {}", f.len())));
        }
        let u = |v: u64| usize::try_from(v).map_err(|_| bad("field does not fit in usize"));
        let req = match tag {
            0 => Request::Bye,
            1 => Request::Mul { len: u(f[0])? },
            2 => Request::Matmul { batch: u(f[0])?, m: u(f[1])?, k: u(f[2])?, n: u(f[3])? },
            3 => {
                let d = |i: usize| u(f[i]);
                Request::Conv2d {
                    x_shape: [d(0)?, d(1)?, d(2)?, d(3)?],
                    w_shape: [d(4)?, d(5)?, d(6)?, d(7)?],
                    params: Conv2dParams {
                        stride: [d(8)?, d(9)?],
                        padding: [d(10)?, d(11)?],
                        dilation: [d(12)?, d(13)?],
                        groups: d(14)?,
                    },
                }
            }
            4 => Request::Trunc { len: u(f[0])?, divisor: f[1] },
            5 => Request::Compare { len: u(f[0])?, thresholds: u(f[1])?, products: u(f[2])? },
            _ => Request::Fourier { len: u(f[0])?, harmonics: u(f[1])?, divisor: f[2] },
        };
        req.validate()?;
        Ok(req)
    }
}

/// One party's share of some correlated randomness.
pub(crate) enum Share {
    Bilinear(BilinearShare),
    Trunc(TruncShare),
    Compare(CompareShare),
    Fourier(FourierShare),
}

/// Beaver triple `(a, b, c = f(a, b))` for a bilinear `f` (Beaver 1991).
pub(crate) struct BilinearShare {
    pub a: Vec<R64>,
    pub b: Vec<R64>,
    /// Empty on the last party until its buffer is allocated ([`Share::allocate_explicit`]).
    pub c: Vec<R64>,
    pub c_len: usize,
}

/// Truncation material: shares of a uniform `r`, of `⌊r / d⌋` and of `r`'s top bit.
pub(crate) struct TruncShare {
    pub r: Vec<R64>,
    /// Empty on the last party until its buffer is allocated ([`Share::allocate_explicit`]).
    pub quotient: Vec<R64>,
    pub msb: MsbShare,
    pub len: usize,
}

/// Shares of `msb(r)` of a truncation pair. Every share is used only through its product
/// with `⌊2^64/d⌋`, which depends on the share modulo `2^(8·trunc::msb_bytes(d))` alone; so
/// the last party's, which the dealer sends, travels in that many bytes (2 for `d ≤ 2^16`).
/// The other parties draw theirs as 64-bit values, so their PRG streams are those of the
/// full-width scheme and every party's share of the result is bit for bit the same.
pub(crate) enum MsbShare {
    W64(Vec<R64>),
    W32(Vec<u32>),
    W16(Vec<u16>),
}

impl MsbShare {
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            MsbShare::W64(v) => bytemuck::cast_slice_mut(v),
            MsbShare::W32(v) => bytemuck::cast_slice_mut(v),
            MsbShare::W16(v) => bytemuck::cast_slice_mut(v),
        }
    }
}

/// One level of the comparison tree: AND triples `(a, b1, b2, a∧b1, a∧b2)` sharing
/// the left operand, so `eq_hi ∧ lt_lo` and `eq_hi ∧ eq_lo` open `eq_hi` once.
/// Bit-sliced: `words` u64 per pair per vector, pairs one after another.
pub(crate) struct AndLevel {
    pub a: Vec<u64>,
    pub b1: Vec<u64>,
    pub b2: Vec<u64>,
    pub c1: Vec<u64>,
    pub c2: Vec<u64>,
}

/// Comparison material (see `compare.rs`): arithmetic mask `r`, XOR-shared lookup
/// tables of `1{u < r_j}` per 4-bit chunk of r's low 63 bits (`len` each); then per
/// compared value (`thresholds·len`: threshold after threshold) a random bit ρ
/// (arithmetic shares) with XOR shares of `msb(r) ⊕ ρ`, AND triples for the tree and,
/// per product vector, a mask `(a, a·ρ)` (vector after vector, `thresholds·len` each).
pub(crate) struct CompareShare {
    pub r: Vec<R64>,
    /// `[element][chunk]` 16-bit tables: bit u of chunk j's table is `1{u < r_j}`.
    pub tables: Vec<u16>,
    pub rho: Vec<R64>,
    /// Bit-packed XOR shares of `msb(r) ⊕ ρ`.
    pub flip: Vec<u64>,
    pub levels: Vec<AndLevel>,
    pub prod_a: Vec<R64>,
    pub prod_arho: Vec<R64>,
}

/// Fourier material (see `fourier.rs`): a mask `r` in Z_2^32; shares in Z_2^32 of `cos(kφ)`,
/// `sin(kφ)` for `φ = 2π·r/2^32` and k = 1..=harmonics, encoded with 12 fractional bits,
/// row by row (`[cos₁ of every element, sin₁ of every element, cos₂, …]`); and a
/// truncation pair in Z_2^32 (as in `TruncShare`: `out_r` and shares in Z_2^64 of
/// `⌊out_r/d⌋` and `msb₃₂(out_r)`) that divides the series and lifts it to Z_2^64.
pub(crate) struct FourierShare {
    pub r: Vec<u32>,
    pub trig: Vec<u32>,
    pub out_r: Vec<u32>,
    pub quotient: Vec<R64>,
    pub msb: Vec<R64>,
}

pub(crate) fn words_for(len: usize) -> usize {
    len.div_ceil(64)
}

fn draw<T: bytemuck::Pod>(prg: &mut Prg, len: usize) -> Vec<T> {
    prg.vec(len)
}

/// Explicit components are zero for the last party until its correction arrives.
fn draw_or_zero<T: bytemuck::Pod>(prg: &mut Prg, len: usize, last: bool) -> Vec<T> {
    if last {
        bytemuck::zeroed_vec(len)
    } else {
        draw(prg, len)
    }
}

/// Sizes `(a, b, c)` of the triple for a bilinear request.
pub(crate) fn bilinear_sizes(req: &Request) -> (usize, usize, usize) {
    match req {
        Request::Mul { len } => (*len, *len, *len),
        Request::Matmul { batch, m, k, n } => (batch * m * k, batch * k * n, batch * m * n),
        Request::Conv2d { x_shape, w_shape, params } => {
            let out = params.output_shape(*x_shape, *w_shape).expect("validated request");
            (x_shape.iter().product(), w_shape.iter().product(), out.iter().product())
        }
        _ => unreachable!("not a bilinear request"),
    }
}

/// The bilinear map a triple is for, on plaintext (dealer side) or public × share values.
pub(crate) fn bilinear_apply(req: &Request, a: &[R64], b: &[R64]) -> Vec<R64> {
    match req {
        Request::Mul { .. } => kernels::mul(a, b),
        Request::Matmul { batch, m, k, n } => kernels::bmm(a, b, *batch, *m, *k, *n),
        Request::Conv2d { x_shape, w_shape, params } => kernels::conv2d(a, *x_shape, b, *w_shape, params).0,
        _ => unreachable!("not a bilinear request"),
    }
}

/// `out += f(a, b)` for the bilinear map `f` of `req` (a single matmul accumulates in place).
pub(crate) fn bilinear_acc(req: &Request, a: &[R64], b: &[R64], out: &mut [R64]) {
    match req {
        Request::Matmul { batch: 1, m, k, n } => kernels::matmul_acc(a, b, *m, *k, *n, out),
        _ => kernels::add_assign(out, &bilinear_apply(req, a, b)),
    }
}

/// Party `last`'s share of the material for `req`, with its explicit components zeroed.
/// The dealer calls this for every party, so both sides draw in exactly this order.
pub(crate) fn expand(req: &Request, prg: &mut Prg, last: bool) -> Share {
    match req {
        Request::Mul { .. } | Request::Matmul { .. } | Request::Conv2d { .. } => {
            let (la, lb, lc) = bilinear_sizes(req);
            let a = draw(prg, la);
            let b = draw(prg, lb);
            let c = if last { Vec::new() } else { draw(prg, lc) };
            Share::Bilinear(BilinearShare { a, b, c, c_len: lc })
        }
        Request::Trunc { len, divisor } => {
            let r = draw(prg, *len);
            let quotient = if last { Vec::new() } else { draw(prg, *len) };
            let msb = match (last, crate::trunc::msb_bytes(*divisor)) {
                (false, _) => MsbShare::W64(draw(prg, *len)),
                (true, 2) => MsbShare::W16(bytemuck::zeroed_vec(*len)),
                (true, 4) => MsbShare::W32(bytemuck::zeroed_vec(*len)),
                (true, _) => MsbShare::W64(bytemuck::zeroed_vec(*len)),
            };
            Share::Trunc(TruncShare { r, quotient, msb, len: *len })
        }
        Request::Compare { len, thresholds, products } => {
            let (len, products, compared) = (*len, *products, len * thresholds);
            let r = draw(prg, len);
            let tables = draw_or_zero(prg, len * CHUNKS, last);
            let rho = draw_or_zero(prg, compared, last);
            let words = words_for(compared);
            let flip = draw_or_zero(prg, words, last);
            let levels = LEVEL_PAIRS
                .iter()
                .map(|&pairs| {
                    let n = pairs * words;
                    let a = draw(prg, n);
                    let b1 = draw(prg, n);
                    let b2 = if pairs > 1 { draw(prg, n) } else { Vec::new() };
                    let c1 = draw_or_zero(prg, n, last);
                    let c2 = if pairs > 1 { draw_or_zero(prg, n, last) } else { Vec::new() };
                    AndLevel { a, b1, b2, c1, c2 }
                })
                .collect();
            let prod_a = draw(prg, products * compared);
            let prod_arho = draw_or_zero(prg, products * compared, last);
            Share::Compare(CompareShare { r, tables, rho, flip, levels, prod_a, prod_arho })
        }
        Request::Fourier { len, harmonics, .. } => {
            let r = draw(prg, *len);
            let trig = draw_or_zero(prg, 2 * harmonics * len, last);
            let out_r = draw(prg, *len);
            let quotient = draw_or_zero(prg, *len, last);
            let msb = draw_or_zero(prg, *len, last);
            Share::Fourier(FourierShare { r, trig, out_r, quotient, msb })
        }
        Request::Bye => unreachable!("Bye carries no material"),
    }
}

impl Share {
    /// Gives the large explicit components that `expand` leaves empty on the last party (a
    /// triple's `c`, a truncation pair's `⌊r/d⌋`) buffers of `alloc(len)`, whose contents
    /// the dealer's answer overwrites: a party's reused scratch buffers, not a zero-filled
    /// 8 MiB per 1024² product that a large product would not even read into.
    pub(crate) fn allocate_explicit(&mut self, mut alloc: impl FnMut(usize) -> Vec<R64>) {
        match self {
            Share::Bilinear(s) if s.c.len() != s.c_len => s.c = alloc(s.c_len),
            Share::Trunc(s) if s.quotient.len() != s.len => s.quotient = alloc(s.len),
            _ => {}
        }
    }

    /// The components the last party receives explicitly, in wire order.
    pub(crate) fn explicit_mut(&mut self) -> Vec<&mut [u8]> {
        fn b<T: bytemuck::Pod>(v: &mut [T]) -> &mut [u8] {
            bytemuck::cast_slice_mut(v)
        }
        match self {
            Share::Bilinear(s) => vec![b(&mut s.c)],
            Share::Trunc(s) => vec![b(&mut s.quotient), s.msb.bytes_mut()],
            Share::Compare(s) => {
                let mut v = vec![b(&mut s.tables), b(&mut s.rho), b(&mut s.flip)];
                for l in &mut s.levels {
                    v.push(b(&mut l.c1));
                    v.push(b(&mut l.c2));
                }
                v.push(b(&mut s.prod_arho));
                v
            }
            Share::Fourier(s) => vec![b(&mut s.trig), b(&mut s.quotient), b(&mut s.msb)],
        }
    }
}
