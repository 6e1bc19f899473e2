//! Beaver multiplication (Beaver 1991, "Efficient multiparty protocols using circuit
//! randomization") for every bilinear map: element-wise product, (batched) matmul, conv2d.
//!
//! With a triple `(a, b, c = f(a, b))` from the dealer, the parties open
//! `ε = x − a` and `δ = y − b` in one message and set
//! `z_i = c_i + f(ε, b_i) + f(a_i, δ) (+ f(ε, δ) on party 0)` for an element-wise product.
//! For a matmul or convolution every party sets `z_i = c_i + f(ε, b_i) + f(x_i, δ)` with its
//! own share `x_i` of x instead: the sum is `f(a, b) + f(x − a, b) + f(x, δ) = f(x, b + δ)
//! = f(x, y)`, two evaluations of f per party as before, with no pass to fold `f(ε, δ)` in
//! (party 0's `b_0 + δ`), and `a_i` is done with once the parties have opened ε.
//! Rounds: 1. Bytes per party: 8·(|x| + |y|) to each peer (ε and δ together).
//! Security: semi-honest; ε and δ are uniformly random given a fresh triple, and the
//! dealer (who knows a, b) never sees them.

use crate::correlated::{bilinear_acc, bilinear_sizes, Request, Share};
use crate::party::Explicit;
use crate::trunc::{needs_truncation, TruncPair};
use crate::{Conv2dParams, Party, ProtocolError, Result};
use syft_mpc_ring::{as_ring, as_ring_mut, kernels, R64};

/// From this size a last party reads a bilinear triple's `c_i` on a second thread during
/// its products: above the loopback socket buffers, the dealer's send would block until
/// the read otherwise (below it, a thread costs more than it saves).
const BACKGROUND_RECEIVE_BYTES: usize = 1 << 20;

impl Party {
    fn beaver(&mut self, req: Request, x: &[R64], y: &[R64]) -> Result<Vec<R64>> {
        let (share, explicit) = self.material(&req)?;
        self.beaver_with(req, share, explicit, x, y, None)
    }

    /// The Beaver product with the triple `share`; with a truncation pair, the product
    /// masked for its truncation (`z + r + B`, see [`Party::truncate_masked`]), the mask
    /// added in a pass the product makes anyway or, on a last party, as the accumulator's
    /// starting value.
    fn beaver_with(
        &mut self,
        req: Request,
        mut share: Share,
        explicit: Explicit,
        x: &[R64],
        y: &[R64],
        mut trunc: Option<&mut TruncPair>,
    ) -> Result<Vec<R64>> {
        let Share::Bilinear(t) = &mut share else { unreachable!("bilinear request") };
        let opened_len = x.len() + y.len();
        let mut pooled = self.scratch(opened_len);
        let masked = &mut pooled[..opened_len];
        let (me, md) = as_ring_mut(masked).split_at_mut(x.len());
        kernels::sub_into(me, x, &t.a);
        kernels::sub_into(md, y, &t.b);
        let theirs = self.exchange_all(masked)?;
        let first = self.id() == 0;
        let opened = as_ring_mut(masked);
        theirs.iter().for_each(|th| kernels::add_assign(opened, as_ring(&th[..opened_len])));
        let (eps, delta) = opened.split_at(x.len());
        // The last party's c_i may still be on its way. For a matmul or convolution the
        // dealer computes f(a, b) while we evaluate f twice, so c_i is added after; an
        // element-wise product is cheaper than the wait, so c_i is read first.
        let elementwise = matches!(req, Request::Mul { .. });
        let c_later = explicit == Explicit::OnTheWire && !elementwise;
        if !c_later {
            self.receive_explicit(&mut share, explicit)?;
        }
        let Share::Bilinear(t) = &mut share else { unreachable!("bilinear request") };
        let lc = bilinear_sizes(&req).2;
        // A last party (B = 0) whose c_i comes later starts its accumulator at the
        // truncation mask r instead of zeros: no zero-fill and no masking pass.
        let starts_at_mask = c_later && trunc.is_some();
        let mut z = if !c_later {
            std::mem::take(&mut t.c)
        } else if let Some(p) = trunc.as_deref_mut() {
            p.take_mask()
        } else {
            vec![R64::ZERO; lc]
        };
        if elementwise {
            // Element-wise: one fused pass, f(ε, δ) folded in on party 0 and the
            // truncation mask r + B too.
            let (r, bias) = match trunc.as_deref() {
                Some(p) => (p.r(), if first { p.bias() } else { R64::ZERO }),
                None => (&[][..], R64::ZERO),
            };
            kernels::for_chunks_mut(&mut z, |o, z| {
                let n = z.len();
                let ins = eps[o..o + n].iter().zip(&delta[o..o + n]).zip(&t.a[o..o + n]).zip(&t.b[o..o + n]);
                if r.is_empty() {
                    for (z, (((&e, &d), &a), &b)) in z.iter_mut().zip(ins) {
                        *z += e * (if first { b + d } else { b }) + d * a;
                    }
                } else {
                    for ((z, (((&e, &d), &a), &b)), &r) in z.iter_mut().zip(ins).zip(&r[o..o + n]) {
                        *z += e * (if first { b + d } else { b }) + d * a + (r + bias);
                    }
                }
            });
        } else {
            // z_i = c_i + f(ε, b_i) + f(x_i, δ), the same on every party (module docs).
            let products = |z: &mut [R64]| {
                bilinear_acc(&req, eps, &t.b, z);
                bilinear_acc(&req, x, delta, z);
            };
            if c_later && 8 * lc >= BACKGROUND_RECEIVE_BYTES {
                // The dealer's send of a large c_i blocks until it is read, and with it
                // the dealer's next request (the product's truncation pair): read it, and
                // then the pair's explicit part, on a second thread while the products
                // run, so the dealer moves on at once.
                let mut c = self.scratch(lc);
                let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut c[..lc]);
                let then = trunc.as_deref_mut().filter(|p| p.explicit == Explicit::OnTheWire);
                let received_then = then.is_some();
                let then = then.map(|p| &mut p.share);
                self.receive_explicit_during(&mut [buf], then, || products(&mut z))?;
                if received_then {
                    trunc.as_deref_mut().expect("a pair was read").explicit = Explicit::Received;
                }
                kernels::add_assign(&mut z, as_ring(&c[..lc]));
                self.recycle([c]);
            } else {
                products(&mut z);
                if c_later {
                    self.receive_explicit(&mut share, explicit)?;
                    let Share::Bilinear(t) = &mut share else { unreachable!("bilinear request") };
                    kernels::add_assign(&mut z, &t.c);
                    let c = std::mem::take(&mut t.c);
                    self.recycle_ring(c);
                }
            }
        }
        if let Some(p) = trunc.as_deref().filter(|_| !elementwise && !starts_at_mask) {
            p.mask(&mut z, first);
        }
        self.recycle(theirs);
        self.recycle([pooled]);
        Ok(z)
    }

    /// The Beaver product `req` of `x` and `y`, truncated by `divisor` (1: not truncated).
    /// Both requests go to the dealer together, so it prepares the truncation pair while
    /// the parties run the product instead of after. Rounds: 2.
    fn beaver_truncated(&mut self, req: Request, x: &[R64], y: &[R64], divisor: u64) -> Result<Vec<R64>> {
        if !needs_truncation(divisor)? {
            return self.beaver(req, x, y);
        }
        let len = bilinear_sizes(&req).2;
        Request::Trunc { len, divisor }.validate()?;
        // Material obtained ahead by the caller must be used in its order.
        if self.nothing_ahead() {
            self.prefetch(&[req.clone(), Request::Trunc { len, divisor }])?;
        }
        let (share, explicit) = self.material(&req)?;
        let mut pair = self.truncation_pair(len, divisor)?;
        let masked = self.beaver_with(req, share, explicit, x, y, Some(&mut pair))?;
        self.truncate_masked(masked, &mut pair)
    }

    fn mul_request(x: &[R64], y: &[R64]) -> Result<Request> {
        if x.len() != y.len() {
            return Err(ProtocolError::Shape(format!("mul of {} and {} elements", x.len(), y.len())));
        }
        Ok(Request::Mul { len: x.len() })
    }

    fn bmm_request(x: &[R64], y: &[R64], batch: usize, m: usize, k: usize, n: usize) -> Result<Request> {
        let want = |dims: [usize; 3]| dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if want([batch, m, k]) != Some(x.len()) || want([batch, k, n]) != Some(y.len()) {
            return Err(ProtocolError::Shape(format!(
                "matmul of {batch}x{m}x{k} by {batch}x{k}x{n} got operands of {} and {} elements",
                x.len(),
                y.len()
            )));
        }
        let req = Request::Matmul { batch, m, k, n };
        req.validate()?;
        Ok(req)
    }

    fn conv2d_request(
        x: &[R64],
        x_shape: [usize; 4],
        w: &[R64],
        w_shape: [usize; 4],
        p: &Conv2dParams,
    ) -> Result<(Request, [usize; 4])> {
        let out = p.output_shape(x_shape, w_shape).map_err(ProtocolError::Shape)?;
        if x.len() != x_shape.iter().product::<usize>() || w.len() != w_shape.iter().product::<usize>() {
            return Err(ProtocolError::Shape(format!(
                "conv2d buffers do not match shapes {x_shape:?} and {w_shape:?}"
            )));
        }
        let req = Request::Conv2d { x_shape, w_shape, params: *p };
        req.validate()?;
        Ok((req, out))
    }

    /// Element-wise product of two shared vectors (the raw ring product: a fixed-point
    /// caller truncates afterwards, or calls [`Party::mul_truncated`]).
    pub fn mul(&mut self, x: &[R64], y: &[R64]) -> Result<Vec<R64>> {
        self.beaver(Self::mul_request(x, y)?, x, y)
    }

    /// [`Party::mul`] then [`Party::truncate`] by `divisor`, with the dealer preparing the
    /// truncation pair during the product.
    pub fn mul_truncated(&mut self, x: &[R64], y: &[R64], divisor: u64) -> Result<Vec<R64>> {
        self.beaver_truncated(Self::mul_request(x, y)?, x, y, divisor)
    }

    /// Shared `(m×k)·(k×n)` matrix product, row-major.
    pub fn matmul(&mut self, x: &[R64], y: &[R64], m: usize, k: usize, n: usize) -> Result<Vec<R64>> {
        self.bmm(x, y, 1, m, k, n)
    }

    /// `batch` independent shared products `(m×k)·(k×n)` in one round.
    pub fn bmm(&mut self, x: &[R64], y: &[R64], batch: usize, m: usize, k: usize, n: usize) -> Result<Vec<R64>> {
        self.beaver(Self::bmm_request(x, y, batch, m, k, n)?, x, y)
    }

    /// [`Party::bmm`] then [`Party::truncate`] by `divisor` (see [`Party::mul_truncated`]).
    #[allow(clippy::too_many_arguments)]
    pub fn bmm_truncated(
        &mut self,
        x: &[R64],
        y: &[R64],
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        divisor: u64,
    ) -> Result<Vec<R64>> {
        self.beaver_truncated(Self::bmm_request(x, y, batch, m, k, n)?, x, y, divisor)
    }

    /// Shared 2-d convolution (input `[N, C, H, W]`, weight `[O, C/groups, KH, KW]`).
    pub fn conv2d(
        &mut self,
        x: &[R64],
        x_shape: [usize; 4],
        w: &[R64],
        w_shape: [usize; 4],
        p: &Conv2dParams,
    ) -> Result<(Vec<R64>, [usize; 4])> {
        self.conv2d_truncated(x, x_shape, w, w_shape, p, 1)
    }

    /// [`Party::conv2d`] then [`Party::truncate`] by `divisor` (see [`Party::mul_truncated`]).
    pub fn conv2d_truncated(
        &mut self,
        x: &[R64],
        x_shape: [usize; 4],
        w: &[R64],
        w_shape: [usize; 4],
        p: &Conv2dParams,
        divisor: u64,
    ) -> Result<(Vec<R64>, [usize; 4])> {
        let (req, out) = Self::conv2d_request(x, x_shape, w, w_shape, p)?;
        Ok((self.beaver_truncated(req, x, w, divisor)?, out))
    }
}
