//! The dealer (PySyft's `crypto_provider`, CrypTen's trusted third party).
//!
//! Security: honest-but-curious and non-colluding. It learns nothing about inputs
//! (it never receives shares or openings); a dealer that colludes with a party
//! breaks privacy, as in every dealer-based protocol.

use crate::correlated::{
    bilinear_acc, bilinear_sizes, expand, words_for, Request, Share, CHUNKS, CHUNK_BITS, LEVEL_PAIRS,
};
use crate::party::Stats;
use crate::{ProtocolError, Result};
use rayon::prelude::*;
use syft_mpc_ring::kernels;
use syft_mpc_ring::prg::{Prg, PrgRange, Seed};
use syft_mpc_ring::{as_ring_mut, R64};
use syft_mpc_transport::Channel;

/// What the last party receives for one request.
enum Correction {
    /// The first bytes of `Dealer::out`: element-wise material, generated in place.
    InBuffer(usize),
    /// The explicit components of the last party's share, sent as they are.
    Share(Share),
}

pub struct Dealer {
    channels: Vec<Box<dyn Channel>>,
    /// `prgs[i]` mirrors party i's stream (seeded with the seed sent to it).
    prgs: Vec<Prg>,
    /// The dealer's private randomness (e.g. the comparison's bit ρ).
    own: Prg,
    served: u64,
    /// The last party's explicit components of the current request, in wire order. Kept
    /// between requests: a fresh buffer of tens of MB per request was a fresh mapping the
    /// kernel faulted in and zero-filled every time.
    out: Vec<u64>,
    /// `Σ a_i` and `Σ b_i` of the current bilinear triple, kept between requests like `out`.
    sum_a: Vec<u64>,
    sum_b: Vec<u64>,
}

impl Dealer {
    /// Sends every party its seed. `parties[i]` is the channel to party i.
    pub fn new(mut parties: Vec<Box<dyn Channel>>) -> Result<Dealer> {
        if parties.len() < 2 {
            return Err(ProtocolError::Parties(format!("a dealer needs at least 2 parties, got {}", parties.len())));
        }
        let mut prgs = Vec::with_capacity(parties.len());
        for ch in &mut parties {
            let seed = Seed::random();
            ch.send(&seed.0)?;
            prgs.push(Prg::new(seed));
        }
        Ok(Dealer {
            channels: parties,
            prgs,
            own: Prg::from_entropy(),
            served: 0,
            out: Vec::new(),
            sum_a: Vec::new(),
            sum_b: Vec::new(),
        })
    }

    /// Serves the last party's requests, in order, until it says goodbye.
    /// Returns the number of requests served.
    pub fn serve(&mut self) -> Result<u64> {
        let last = self.channels.len() - 1;
        loop {
            let msg = self.channels[last].recv()?;
            let req = Request::decode(&msg)?;
            if req == Request::Bye {
                return Ok(self.served);
            }
            match self.correction(&req) {
                Correction::InBuffer(bytes) => self.channels[last].send(&bytemuck::cast_slice(&self.out)[..bytes])?,
                Correction::Share(mut share) => {
                    let parts: Vec<&[u8]> = share.explicit_mut().into_iter().map(|p| &*p).collect();
                    self.channels[last].send_parts(&parts)?
                }
            }
            self.served += 1;
        }
    }

    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for ch in &self.channels {
            let c = ch.stats();
            s.bytes_sent += c.bytes_sent;
            s.bytes_received += c.bytes_received;
        }
        s
    }

    /// Expands every party's share of `req` and computes the last party's explicit part.
    fn correction(&mut self, req: &Request) -> Correction {
        match *req {
            // Beaver triple: c_last = (Σ a_i)(Σ b_i) − Σ_{i<last} c_i.
            Request::Mul { len } => {
                return Correction::InBuffer(self.elementwise(len, [8], |[a, b], [c], [out]| *out = *a * *b - *c))
            }
            Request::Matmul { .. } | Request::Conv2d { .. } => return Correction::InBuffer(self.bilinear(req)),
            // Truncation pair: shares of ⌊r/d⌋ and msb(r) for r = Σ r_i, the latter in the
            // low bytes that the parties' use of it depends on (`trunc::msb_bytes`).
            Request::Trunc { len, divisor } => {
                let div = crate::trunc::Divisor::new(divisor);
                let widths = [8, crate::trunc::msb_bytes(divisor)];
                return Correction::InBuffer(self.elementwise(len, widths, |[r], [q, m], [q_out, m_out]| {
                    *q_out = R64(div.of(r.0)) - *q;
                    *m_out = R64(r.msb()) - *m;
                }));
            }
            _ => {}
        }
        let n = self.prgs.len();
        let mut shares: Vec<Share> =
            self.prgs.iter_mut().enumerate().map(|(i, prg)| expand(req, prg, i == n - 1)).collect();
        let mut last = shares.pop().expect("at least two parties");
        let others = &shares;
        match &mut last {
            Share::Compare(l) => self.compare_correction(l, others.iter().map(cmp).collect()),
            Share::Fourier(l) => {
                let Request::Fourier { harmonics, divisor, .. } = *req else { unreachable!("Fourier request") };
                fourier_correction(l, others.iter().map(fourier).collect(), harmonics, divisor)
            }
            Share::Bilinear(_) | Share::Trunc(_) => unreachable!("triples and truncation pairs are generated above"),
        }
        Correction::Share(last)
    }

    /// The Beaver triple of a matmul or convolution: the last party's
    /// `c = f(Σ a_i, Σ b_i) − Σ_{i<last} c_i`, into `self.out`. The sums are expanded chunk
    /// by chunk from reserved PRG ranges (in `correlated::expand`'s draw order) into buffers
    /// kept between requests, and the product accumulates onto `−Σ c_i`: no share is
    /// materialised, and no buffer is freshly allocated, zero-filled or subtracted.
    /// Returns the output's length in bytes.
    fn bilinear(&mut self, req: &Request) -> usize {
        let (la, lb, lc) = bilinear_sizes(req);
        let n = self.prgs.len();
        let mut a_ranges = Vec::with_capacity(n);
        let mut b_ranges = Vec::with_capacity(n);
        let mut c_ranges = Vec::with_capacity(n - 1);
        for (i, prg) in self.prgs.iter_mut().enumerate() {
            a_ranges.push(prg.reserve(8 * la));
            b_ranges.push(prg.reserve(8 * lb));
            if i < n - 1 {
                c_ranges.push(prg.reserve(8 * lc));
            }
        }
        let mut a = std::mem::take(&mut self.sum_a);
        let mut b = std::mem::take(&mut self.sum_b);
        let a_sum = sum_ranges(&mut a, la, &a_ranges, false);
        let b_sum = sum_ranges(&mut b, lb, &b_ranges, false);
        let mut out = std::mem::take(&mut self.out);
        let c = sum_ranges(&mut out, lc, &c_ranges, true);
        bilinear_acc(req, a_sum, b_sum, c);
        (self.sum_a, self.sum_b, self.out) = (a, b, out);
        8 * lc
    }

    /// The first `words` words of the reused output buffer (grown, never shrunk).
    fn out_words(&mut self, words: usize) -> &mut [u64] {
        if self.out.len() < words {
            self.out.resize(words, 0);
        }
        &mut self.out[..words]
    }

    /// Corrections for element-wise material whose every party draws `S` "shared" fields
    /// and then, except the last party, `E` "explicit" fields (the draw order of
    /// `correlated::expand` for Beaver triples and truncation pairs). Expanded chunk by
    /// chunk from reserved PRG ranges on all threads, so nothing but the output — `E`
    /// fields of `len` elements, field-major, field `j` in its low `widths[j]` ∈ {2, 4, 8}
    /// bytes per element, in `self.out` — is materialised.
    /// `f(shared sums, explicit sums of the other parties, out)` fills one element.
    /// Returns the output's length in bytes.
    fn elementwise<const S: usize, const E: usize>(
        &mut self,
        len: usize,
        widths: [usize; E],
        f: impl Fn(&[R64; S], &[R64; E], &mut [R64; E]) + Sync,
    ) -> usize {
        const CHUNK: usize = 2048;
        assert!(widths.iter().all(|w| [2, 4, 8].contains(w)), "output widths are 2, 4 or 8 bytes");
        let n = self.prgs.len();
        let ranges: Vec<(Vec<PrgRange>, Vec<PrgRange>)> = self
            .prgs
            .iter_mut()
            .enumerate()
            .map(|(i, prg)| {
                let shared = (0..S).map(|_| prg.reserve(8 * len)).collect();
                let explicit = if i < n - 1 { (0..E).map(|_| prg.reserve(8 * len)).collect() } else { Vec::new() };
                (shared, explicit)
            })
            .collect();
        let bytes: usize = widths.iter().map(|w| w * len).sum();
        let out: &mut [u8] = bytemuck::cast_slice_mut(self.out_words(bytes.div_ceil(8)));
        // Chunk k of every output field, handed out together. Every field starts at a
        // multiple of its width (the wider fields come first or are as wide).
        let mut chunked: Vec<Vec<Field<'_>>> = Vec::new();
        let mut rest = &mut out[..bytes];
        for &w in &widths {
            let (field, tail) = std::mem::take(&mut rest).split_at_mut(w * len);
            rest = tail;
            for (k, c) in field.chunks_mut(w * CHUNK).enumerate() {
                if chunked.len() <= k {
                    chunked.push(Vec::with_capacity(E));
                }
                chunked[k].push(Field::of(c, w));
            }
        }
        chunked.into_par_iter().enumerate().for_each(|(k, mut dst)| {
            let first = k * CHUNK;
            let m = CHUNK.min(len - first);
            let mut buf = [R64::ZERO; CHUNK];
            let mut shared = [[R64::ZERO; CHUNK]; S];
            let mut explicit = [[R64::ZERO; CHUNK]; E];
            for (sh, ex) in &ranges {
                for (acc, r) in shared.iter_mut().zip(sh).chain(explicit.iter_mut().zip(ex)) {
                    r.fill_at(first, &mut buf[..m]);
                    kernels::add_assign(&mut acc[..m], &buf[..m]);
                }
            }
            // The outputs replace the explicit sums, element by element.
            for e in 0..m {
                let mut o = [R64::ZERO; E];
                f(&std::array::from_fn(|j| shared[j][e]), &std::array::from_fn(|j| explicit[j][e]), &mut o);
                for j in 0..E {
                    explicit[j][e] = o[j];
                }
            }
            for (d, v) in dst.iter_mut().zip(&explicit) {
                d.write(&v[..m]);
            }
        });
        bytes
    }

    fn compare_correction(
        &mut self,
        l: &mut crate::correlated::CompareShare,
        others: Vec<&crate::correlated::CompareShare>,
    ) {
        // One mask r and its tables serve every threshold; ρ and all that follows is per
        // compared value (`compared = thresholds·len`, threshold after threshold).
        let (len, compared) = (l.r.len(), l.rho.len());
        let mut r = l.r.clone();
        others.iter().for_each(|s| kernels::add_assign(&mut r, &s.r));
        let rho_bits: Vec<u64> = {
            let mut w = vec![0u64; words_for(compared)];
            self.own.fill_bytes(bytemuck::cast_slice_mut(&mut w));
            w
        };
        let bit = |w: &[u64], e: usize| (w[e / 64] >> (e % 64)) & 1;

        // Tables: true value XOR the other parties' shares.
        l.tables.par_chunks_mut(CHUNKS).enumerate().for_each(|(e, t)| {
            let low = r[e].0 & (u64::MAX >> 1);
            for (j, tj) in t.iter_mut().enumerate() {
                let v = (low >> (CHUNK_BITS as usize * j)) & ((1 << CHUNK_BITS) - 1);
                *tj = ((1u32 << v) - 1) as u16;
            }
        });
        for s in &others {
            l.tables.iter_mut().zip(&s.tables).for_each(|(t, o)| *t ^= o);
        }

        let rho: Vec<R64> = (0..compared).map(|e| R64(bit(&rho_bits, e))).collect();
        l.rho = rho.clone();
        others.iter().for_each(|s| kernels::sub_assign(&mut l.rho, &s.rho));
        // msb(r) ⊕ ρ, which turns the tree's borrow into the safe-to-open msb(x) ⊕ ρ.
        let mut flip = rho_bits;
        for e in 0..compared {
            flip[e / 64] ^= r[e % len.max(1)].msb() << (e % 64);
        }
        for s in &others {
            flip.iter_mut().zip(&s.flip).for_each(|(f, o)| *f ^= o);
        }
        l.flip = flip;

        for (lvl, &pairs) in LEVEL_PAIRS.iter().enumerate() {
            let xor_all = |f: &dyn Fn(&crate::correlated::AndLevel) -> &Vec<u64>, own: &Vec<u64>| {
                let mut acc = own.clone();
                for s in &others {
                    acc.iter_mut().zip(f(&s.levels[lvl])).for_each(|(x, y)| *x ^= y);
                }
                acc
            };
            let a = xor_all(&|t| &t.a, &l.levels[lvl].a);
            let b1 = xor_all(&|t| &t.b1, &l.levels[lvl].b1);
            let mut c1: Vec<u64> = a.iter().zip(&b1).map(|(x, y)| x & y).collect();
            let mut c2: Vec<u64> = if pairs > 1 {
                let b2 = xor_all(&|t| &t.b2, &l.levels[lvl].b2);
                a.iter().zip(&b2).map(|(x, y)| x & y).collect()
            } else {
                Vec::new()
            };
            for s in &others {
                c1.iter_mut().zip(&s.levels[lvl].c1).for_each(|(x, y)| *x ^= y);
                c2.iter_mut().zip(&s.levels[lvl].c2).for_each(|(x, y)| *x ^= y);
            }
            l.levels[lvl].c1 = c1;
            l.levels[lvl].c2 = c2;
        }

        if !l.prod_a.is_empty() {
            let mut arho = l.prod_a.clone();
            others.iter().for_each(|s| kernels::add_assign(&mut arho, &s.prod_a));
            arho.chunks_mut(compared).for_each(|a| kernels::mul_assign(a, &rho)); // a·ρ, vector by vector
            others.iter().for_each(|s| kernels::sub_assign(&mut arho, &s.prod_arho));
            l.prod_arho = arho;
        }
    }
}

/// `Σ` (or with `negate`, `−Σ`) of the `len` elements of every range, into the first `len`
/// elements of `buf` (grown, never shrunk), chunk by chunk on all threads; returns them.
fn sum_ranges<'a>(buf: &'a mut Vec<u64>, len: usize, ranges: &[PrgRange], negate: bool) -> &'a mut [R64] {
    const CHUNK: usize = 4096;
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let dst = as_ring_mut(&mut buf[..len]);
    let Some((first, rest)) = ranges.split_first() else {
        dst.fill(R64::ZERO);
        return dst;
    };
    dst.par_chunks_mut(CHUNK).enumerate().for_each(|(k, d)| {
        first.fill_at(k * CHUNK, d);
        let mut tmp = [R64::ZERO; CHUNK];
        for r in rest {
            r.fill_at(k * CHUNK, &mut tmp[..d.len()]);
            kernels::add_assign(d, &tmp[..d.len()]);
        }
        if negate {
            d.iter_mut().for_each(|v| *v = -*v);
        }
    });
    dst
}

/// One chunk of an output field of [`Dealer::elementwise`], in the width it is sent in.
enum Field<'a> {
    W64(&'a mut [u64]),
    W32(&'a mut [u32]),
    W16(&'a mut [u16]),
}

impl<'a> Field<'a> {
    fn of(bytes: &'a mut [u8], width: usize) -> Field<'a> {
        match width {
            8 => Field::W64(bytemuck::cast_slice_mut(bytes)),
            4 => Field::W32(bytemuck::cast_slice_mut(bytes)),
            _ => Field::W16(bytemuck::cast_slice_mut(bytes)),
        }
    }

    /// The low bytes of `v`: `v mod 2^(8·width)`.
    fn write(&mut self, v: &[R64]) {
        match self {
            Field::W64(d) => d.iter_mut().zip(v).for_each(|(d, v)| *d = v.0),
            Field::W32(d) => d.iter_mut().zip(v).for_each(|(d, v)| *d = v.0 as u32),
            Field::W16(d) => d.iter_mut().zip(v).for_each(|(d, v)| *d = v.0 as u16),
        }
    }
}

/// `cos kφ`, `sin kφ` of the mask `r = Σ r_i` (φ = 2π·r/2^32) with 12 fractional bits, and
/// `⌊R/d⌋`, `msb₃₂(R)` of the output mask `R = Σ out_r_i`, less the other parties' shares.
fn fourier_correction(
    l: &mut crate::correlated::FourierShare,
    others: Vec<&crate::correlated::FourierShare>,
    harmonics: usize,
    divisor: u64,
) {
    // Masks in Z_2^32: the sum of every party's share.
    let sum32 = |of: fn(&crate::correlated::FourierShare) -> &[u32]| {
        let mut acc = of(l).to_vec();
        others.iter().for_each(|o| acc.iter_mut().zip(of(o)).for_each(|(a, x)| *a = a.wrapping_add(*x)));
        acc
    };
    let (r, out_r) = (sum32(|f| &f.r), sum32(|f| &f.out_r));
    crate::fourier::encode_trig(&r, harmonics, &mut l.trig);
    for o in &others {
        l.trig.iter_mut().zip(&o.trig).for_each(|(t, x)| *t = t.wrapping_sub(*x));
    }
    let div = crate::trunc::Divisor::new(divisor);
    for (e, &v) in out_r.iter().enumerate() {
        let others_q: R64 = others.iter().map(|o| o.quotient[e]).sum();
        let others_m: R64 = others.iter().map(|o| o.msb[e]).sum();
        l.quotient[e] = R64(div.of(u64::from(v))) - others_q;
        l.msb[e] = R64(u64::from(v >> 31)) - others_m;
    }
}

fn fourier(s: &Share) -> &crate::correlated::FourierShare {
    match s {
        Share::Fourier(f) => f,
        _ => unreachable!("shares of one request have one kind"),
    }
}

fn cmp(s: &Share) -> &crate::correlated::CompareShare {
    match s {
        Share::Compare(c) => c,
        _ => unreachable!("shares of one request have one kind"),
    }
}
