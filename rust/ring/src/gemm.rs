//! Matrix product in Z_2^64, the hottest code in the project.
//!
//! The structure is the GotoBLAS/BLIS one (Goto & van de Geijn, "Anatomy of
//! high-performance matrix multiplication", TOMS 2008; Van Zee & van de Geijn,
//! "BLIS", TOMS 2015): the operands are copied ("packed") block by block into
//! contiguous micro-panels so that a register-blocked micro-kernel streams
//! them from L1/L2 with unit stride:
//!
//! ```text
//! for jc in n step NC:            B block  KC x NC  packed once, shared by all threads (L3)
//!   for pc in k step KC:
//!     pack B[pc.., jc..]
//!     par for ic in m step MC:    A block  MC x KC  packed per task (L2)
//!       pack A[ic.., pc..]
//!       for jr in nc step NR:     B micro-panel KC x NR stays in L1
//!         for ir in mc step MR:   micro-kernel: C[MR x NR] += A_panel · B_panel
//! ```
//!
//! x86-64 has no vector 64x64-bit multiply below AVX-512, so the AVX2
//! micro-kernel splits each product into 32-bit limbs:
//! `a·b mod 2^64 = lo(a)·lo(b) + ((hi(a)·lo(b) + lo(a)·hi(b)) mod 2^32) << 32`.
//! `vpmuludq` gives the full 64-bit `lo·lo`; one `vpmulld` on `b` and on
//! `a` with its halves swapped gives both cross terms mod 2^32 in the two
//! 32-bit halves of a lane. The cross terms go to a separate accumulator
//! (32-bit adds) and are folded in and shifted once per micro-tile, after the
//! k-loop. The swapped copy of `a` is made when packing A, so the inner loop
//! is two multiplies and two adds per four lanes, with no shifts or masks.
//!
//! The kernel is chosen at run time, so the wheel needs no `-C target-cpu`:
//! Intel AMX-INT8 where the CPU and OS allow it (`gemm_amx`: the ring product
//! as 36 byte-limb u8 GEMMs on `TDPBUUD`, with its own packing and blocking),
//! else AVX-512 IFMA (`vpmadd52luq`/`vpmadd52huq`: the product from three
//! 52-bit multiply-adds, with a packed companion per value for the cross term,
//! 6 x 16 tile; see `avx512::kernel_ifma`), else AVX-512 F + DQ (`vpmullq`, the
//! full 64-bit product per lane, 14 x 16 tile in 28 zmm accumulators), else
//! the AVX2 kernel above
//! (`is_x86_feature_detected!`), else a portable blocked loop. The blocked
//! driver is shared; each family has its own tile and block sizes (`Geom`).
//! `SYFT_MPC_GEMM=amx|avx512ifma|avx512|avx2|portable` forces one (read once);
//! [`kernel_info`] says which runs and why; [`force_kernel`] overrides it for
//! tests and benchmarks.

use crate::choice::{self, Choice, Override};
use rayon::prelude::*;
use std::cell::Cell;
use std::sync::OnceLock;

// Tile and block sizes were measured on Zen 3 (AVX2, 32 KiB L1d, 512 KiB L2)
// at 1024^3: 3 x 8 beat 6 x 4, 4 x 4 and 2 x 12 (the last spills), and
// KC = 384, MC = 48 beat 192..512 x 36..120 by 3-10%.

/// Rows of the micro-tile: 3 x 8 needs 12 accumulators (lo and cross per
/// vector) + 2 B vectors + 1 broadcast + 1 product = all 16 ymm registers.
const MR: usize = 3;
/// u64 lanes per AVX2 vector.
const LANES: usize = 4;
/// Vectors per micro-tile row.
const NV: usize = 2;
/// Columns of the micro-tile.
const NR: usize = NV * LANES;
/// Packed A elements per k step of a micro-panel: each value and its half-swapped copy.
const A_STEP: usize = 2 * MR;
/// Packed B elements per k step of a micro-panel.
const B_STEP: usize = NR;
/// Depth of a packed block: a B micro-panel (KC·NR·8 B = 24 KiB) stays in L1.
const KC: usize = 384;
/// Rows of a packed A block (MC·KC·16 B = 288 KiB, in L2). A multiple of MR.
const MC: usize = 48;
/// Columns of a packed B block (KC·NC·8 B in L3). A multiple of NR.
const NC: usize = 4096;
/// Below this many multiply-adds, packing costs more than it saves.
const SMALL: usize = 24 * 24 * 24;

/// Micro-tile and block sizes of one micro-kernel family.
#[derive(Clone, Copy)]
struct Geom {
    /// Rows of the micro-tile.
    mr: usize,
    /// Columns of the micro-tile.
    nr: usize,
    /// How values are packed (plain, or with a companion per value).
    layout: Layout,
    /// Depth of a packed block.
    kc: usize,
    /// Rows of a packed A block (upper bound; rounded to `mr`).
    mc: usize,
}

/// The packed layout of the A and B micro-panels.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// A and B values as they are (`vpmullq`).
    Plain,
    /// Each A value followed by its copy with the 32-bit halves swapped (32-bit limbs).
    Swap,
    /// Each A value followed by [`ifma_a`] of it; each B row of `nr` values
    /// followed by [`ifma_b`] of them (IFMA, see `avx512::kernel_ifma`).
    Ifma,
}

impl Geom {
    /// Packed A elements per k step of a micro-panel.
    const fn a_step(self) -> usize {
        match self.layout {
            Layout::Plain => self.mr,
            Layout::Swap | Layout::Ifma => 2 * self.mr,
        }
    }

    /// Packed B elements per k step of a micro-panel.
    const fn b_step(self) -> usize {
        match self.layout {
            Layout::Plain | Layout::Swap => self.nr,
            Layout::Ifma => 2 * self.nr,
        }
    }
}

const LOW12: u64 = (1 << 12) - 1;

/// The A companion of the IFMA kernel: with `x = x0 + x1·2^52`, the bits
/// `x1` at 12 and `x0 mod 2^12` at 36 (see `avx512::kernel_ifma`).
#[inline(always)]
fn ifma_a(x: u64) -> u64 {
    ((x >> 52) << 12) | ((x & LOW12) << 36)
}

/// The B companion of the IFMA kernel: `x1` at 16 and `x0 mod 2^12` at 40.
#[inline(always)]
fn ifma_b(x: u64) -> u64 {
    ((x >> 52) << 16) | ((x & LOW12) << 40)
}

/// The AVX2 kernel and the portable one share this layout.
const GEOM_AVX2: Geom = Geom { mr: MR, nr: NR, layout: Layout::Swap, kc: KC, mc: MC };
const _: () = assert!(GEOM_AVX2.a_step() == A_STEP && NC / NR * NR == NC);

/// AVX-512: 14 x 16 tile; a B micro-panel (KC·16·8 B = 32 KiB at KC = 256)
/// stays in the 48 KiB L1d, an A block (MC·KC·8 B = 336 KiB) in L2.
#[cfg(target_arch = "x86_64")]
const GEOM_AVX512: Geom = Geom { mr: avx512::MR, nr: avx512::NR, layout: Layout::Plain, kc: 256, mc: 168 };
#[cfg(not(target_arch = "x86_64"))]
const GEOM_AVX512: Geom = GEOM_AVX2;
/// AVX-512 IFMA: 6 x 16 tile; a B micro-panel is KC·32·8 B = 64 KiB, an A
/// block MC·KC·16 B = 384 KiB (in L2). At 1024^3 on Sapphire Rapids, KC from
/// 256 to 512 with MC = 96 measured alike (11.2-11.4 GMAC/s), KC = 128..160
/// and MC = 192 lower; the AVX-512 `vpmullq` kernel was flat (9.2-9.6) over
/// KC = 192..384, MC = 112..336.
#[cfg(target_arch = "x86_64")]
const GEOM_IFMA: Geom = Geom { mr: avx512::MR_IFMA, nr: avx512::NR, layout: Layout::Ifma, kc: 256, mc: 96 };
#[cfg(not(target_arch = "x86_64"))]
const GEOM_IFMA: Geom = GEOM_AVX2;

/// Which micro-kernel the blocked driver calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Micro {
    Avx512Ifma,
    Avx512,
    Avx2,
    Portable,
}

/// A matrix view: element `(i, j)` is `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [u64],
    pub rs: usize,
    pub cs: usize,
}

impl View<'_> {
    #[inline(always)]
    pub(crate) fn at(&self, i: usize, j: usize) -> u64 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// Raw output pointer shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut u64);
// SAFETY: tasks write disjoint (row block x column block) tiles of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method (not `.0`) so closures capture the whole `Sync` wrapper.
    pub(crate) fn get(self) -> *mut u64 {
        self.0
    }
}

thread_local! {
    // Packing buffers reused across calls. `take`/`set` (not a borrow) keeps
    // this correct when rayon runs a nested task on the same thread.
    static BUF_A: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
    static BUF_B: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
}

/// A buffer of `len` elements, reusing the thread's cached allocation in `key`, filled with
/// `fill` only where it grows: for packers that write every element they are given (padding
/// included), so a stale buffer costs no `memset` (at 1024³ the AMX packers' buffers were
/// 16 MiB zero-filled per product).
pub(crate) fn take_buf_stale<T: Clone + 'static>(
    key: &'static std::thread::LocalKey<Cell<Vec<T>>>,
    len: usize,
    fill: T,
) -> Vec<T> {
    let mut v = key.with(|c| c.take());
    if v.len() < len {
        v.resize(len, fill);
    }
    v.truncate(len);
    v
}

/// Returns a buffer from [`take_buf_stale`] to the thread's cache.
pub(crate) fn give_buf<T: 'static>(key: &'static std::thread::LocalKey<Cell<Vec<T>>>, v: Vec<T>) {
    key.with(|c| c.set(v));
}

/// AVX-512 Foundation and Doubleword/Quadword (`vpmullq`), with the OS saving
/// the zmm/opmask state (`is_x86_feature_detected!` checks XCR0 too).
pub(crate) fn use_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AVX-512F with IFMA (52-bit multiply-add, `vpmadd52luq`/`vpmadd52huq`).
pub(crate) fn use_avx512_ifma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512ifma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn use_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A micro-kernel family of the ring GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Intel AMX-INT8: 36 byte-limb products with `TDPBUUD` (see `gemm_amx`).
    Amx,
    /// AVX-512 IFMA 6 x 16 micro-kernel: three 52-bit multiply-adds per product.
    Avx512Ifma,
    /// AVX-512 (F + DQ) 14 x 16 micro-kernel on full 64-bit multiplies (`vpmullq`).
    Avx512,
    /// AVX2 3 x 8 micro-kernel on 32-bit limbs (`vpmuludq` + `vpmulld`).
    Avx2,
    /// Plain Rust on the same packed layout as AVX2.
    Portable,
}

impl Kernel {
    /// Every kernel, best first.
    pub const ALL: [Kernel; 5] = [Kernel::Amx, Kernel::Avx512Ifma, Kernel::Avx512, Kernel::Avx2, Kernel::Portable];

    /// The name used by `SYFT_MPC_GEMM` and [`kernel_info`].
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx",
            Kernel::Avx512Ifma => "avx512ifma",
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// Whether this CPU (and OS) can run the kernel, or why not.
    pub fn support(self) -> Result<(), String> {
        match self {
            Kernel::Amx => crate::gemm_amx::amx_support(),
            Kernel::Avx512Ifma if use_avx512_ifma() => Ok(()),
            Kernel::Avx512Ifma => Err("no AVX-512F/IFMA (CPU or OS)".into()),
            Kernel::Avx512 if use_avx512() => Ok(()),
            Kernel::Avx512 => Err("no AVX-512F/DQ (CPU or OS)".into()),
            Kernel::Avx2 if use_avx2() => Ok(()),
            Kernel::Avx2 => Err("no AVX2".into()),
            Kernel::Portable => Ok(()),
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which kernel the ring GEMM uses, which this CPU and OS can run, and why
/// ([`crate::choice`]: the rule it shares with the element-wise passes).
pub type KernelInfo = Choice<Kernel>;

/// Environment variable that forces a kernel: `amx`, `avx512ifma`, `avx512`,
/// `avx2` or `portable`. Read once per process; a kernel this CPU lacks falls back to
/// the best available one, as [`kernel_info`] says.
pub const KERNEL_ENV: &str = "SYFT_MPC_GEMM";

/// The kernels this CPU and OS can run, best first.
pub fn available_kernels() -> Vec<Kernel> {
    Kernel::ALL.into_iter().filter(|k| k.support().is_ok()).collect()
}

/// The choice made at first use: best available, or what `SYFT_MPC_GEMM` asks for.
fn default_choice() -> &'static KernelInfo {
    static INFO: OnceLock<KernelInfo> = OnceLock::new();
    INFO.get_or_init(|| choice::from_env(KERNEL_ENV, &Kernel::ALL, Kernel::name, Kernel::support))
}

static FORCED: Override = Override::new();

/// The kernel the next ring GEMM uses.
fn current_kernel() -> Kernel {
    FORCED.get(&Kernel::ALL).unwrap_or(default_choice().chosen)
}

/// Which kernel the ring GEMM uses now, what is available and why.
pub fn kernel_info() -> KernelInfo {
    default_choice().clone().with(current_kernel(), "force_kernel")
}

/// Overrides the kernel for the whole process (tests and benchmarks); `None`
/// restores the default. Errors, changing nothing, if the CPU lacks it.
/// Calls already running keep the kernel they started with.
pub fn force_kernel(kernel: Option<Kernel>) -> Result<(), String> {
    if let Some(k) = kernel {
        k.support().map_err(|why| format!("{k} kernel unavailable: {why}"))?;
    }
    FORCED.set(&Kernel::ALL, kernel);
    Ok(())
}

/// `c (m x n, row-major, row stride ldc) += a (m x k) · b (k x n)` in Z_2^64.
pub(crate) fn gemm_acc(a: View<'_>, b: View<'_>, m: usize, k: usize, n: usize, c: &mut [u64], ldc: usize) {
    gemm_acc_with(current_kernel(), a, b, m, k, n, c, ldc)
}

/// [`gemm_acc`] with the kernel chosen by the caller (tests run each one).
/// The kernel must be available (see [`Kernel::support`]): AMX panics otherwise.
fn gemm_acc_with(kernel: Kernel, a: View<'_>, b: View<'_>, m: usize, k: usize, n: usize, c: &mut [u64], ldc: usize) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "gemm: output buffer too small");
    if m.saturating_mul(n).saturating_mul(k) <= SMALL {
        return gemm_small(a, b, m, k, n, c, ldc);
    }
    let (micro, g) = match kernel {
        Kernel::Amx => return crate::gemm_amx::gemm_acc(a, b, m, k, n, c, ldc),
        Kernel::Avx512Ifma if use_avx512_ifma() => (Micro::Avx512Ifma, GEOM_IFMA),
        Kernel::Avx512 if use_avx512() => (Micro::Avx512, GEOM_AVX512),
        Kernel::Avx2 if use_avx2() => (Micro::Avx2, GEOM_AVX2),
        _ => (Micro::Portable, GEOM_AVX2),
    };
    let (mr_t, nr_t, a_step, b_step) = (g.mr, g.nr, g.a_step(), g.b_step());
    let threads = rayon::current_num_threads().max(1);
    // Row blocks of at most MC rows, as many as a multiple of the thread
    // count so that every thread gets the same share, rounded to the micro-tile.
    let blocks = m.div_ceil(g.mc).next_multiple_of(threads);
    let mc = m.div_ceil(blocks).next_multiple_of(mr_t);
    let row_blocks = m.div_ceil(mc);
    let out = OutPtr(c.as_mut_ptr());

    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let panels = nc.div_ceil(nr_t);
        // Too few row blocks to feed every thread: also split the columns.
        let col_splits = if row_blocks >= threads { 1 } else { threads.div_ceil(row_blocks).min(panels) };
        let panels_per_split = panels.div_ceil(col_splits);
        for pc in (0..k).step_by(g.kc) {
            let kc = g.kc.min(k - pc);
            let mut pb = take_buf_stale(&BUF_B, panels * b_step * kc, 0);
            pack_b(g, b, pc, kc, jc, nc, &mut pb);
            let pb_ref = &pb;
            (0..row_blocks * col_splits).into_par_iter().for_each(|task| {
                let (rb, cs) = (task / col_splits, task % col_splits);
                let ic = rb * mc;
                let mcb = mc.min(m - ic);
                let p0 = cs * panels_per_split;
                let p1 = panels.min(p0 + panels_per_split);
                if p0 >= p1 {
                    return;
                }
                let mut pa = take_buf_stale(&BUF_A, mcb.div_ceil(mr_t) * a_step * kc, 0);
                pack_a(g, a, ic, mcb, pc, kc, &mut pa);
                for jp in p0..p1 {
                    let j = jp * nr_t;
                    let nr = nr_t.min(nc - j);
                    let bpanel = &pb_ref[jp * b_step * kc..(jp + 1) * b_step * kc];
                    for ip in 0..mcb.div_ceil(mr_t) {
                        let i = ip * mr_t;
                        let mr = mr_t.min(mcb - i);
                        let apanel = &pa[ip * a_step * kc..(ip + 1) * a_step * kc];
                        // SAFETY: (ic+i.., jc+j..) with mr x nr lies inside the m x n output
                        // (checked above) and this task is the only writer of the tile.
                        unsafe {
                            let cp = out.get().add((ic + i) * ldc + jc + j);
                            // The next tile's C rows (down the panel, else the next panel's
                            // first) into L2 while this one computes: the AVX-512 kernels load
                            // their tile at the start.
                            let (ni, nj) = if i + mr_t < mcb { (i + mr_t, j) } else { (0, j + nr_t) };
                            if nj < nc && (ni > 0 || jp + 1 < p1) {
                                let next = out.get().wrapping_add((ic + ni) * ldc + jc + nj);
                                prefetch_tile_l2(next, ldc, mr_t.min(mcb - ni), nr_t.min(nc - nj));
                            }
                            micro_tile(micro, kc, apanel, bpanel, cp, ldc, mr, nr);
                        }
                    }
                }
                give_buf(&BUF_A, pa);
            });
            give_buf(&BUF_B, pb);
        }
    }
}

/// Plain triple loop (i, p, j) for products too small to pay for packing.
fn gemm_small(a: View<'_>, b: View<'_>, m: usize, k: usize, n: usize, c: &mut [u64], ldc: usize) {
    for i in 0..m {
        let row = &mut c[i * ldc..i * ldc + n];
        for p in 0..k {
            let aip = a.at(i, p);
            for (j, o) in row.iter_mut().enumerate() {
                *o = o.wrapping_add(aip.wrapping_mul(b.at(p, j)));
            }
        }
    }
}

/// Packs `A[ic..ic+mc, pc..pc+kc]` into `g.mr`-row micro-panels (column by
/// column within a panel; see [`Layout`] for the companion values). Rows
/// past `mc` are zero. Writes every element of `dst`.
fn pack_a(g: Geom, a: View<'_>, ic: usize, mc: usize, pc: usize, kc: usize, dst: &mut [u64]) {
    let step = g.a_step();
    for (ip, panel) in dst.chunks_exact_mut(step * kc).enumerate() {
        let i0 = ip * g.mr;
        let rows = g.mr.min(mc - i0);
        // One bounds check per panel instead of one per element; the k step is the
        // outer loop so the writes are sequential (the reads are `rows` streams).
        let last = (ic + i0 + rows - 1) * a.rs + (pc + kc - 1) * a.cs;
        assert!(last < a.data.len() && g.mr <= 16, "pack_a: A view out of range");
        let mut row = [0usize; 16];
        for (r, o) in row.iter_mut().enumerate().take(rows) {
            *o = (ic + i0 + r) * a.rs + pc * a.cs;
        }
        for (p, out) in panel.chunks_exact_mut(step).enumerate() {
            let col = p.wrapping_mul(a.cs);
            // SAFETY: r < rows and p < kc, so the index is at most `last` (checked above);
            // no overflow for the same reason.
            let at = |r: usize| unsafe { *a.data.get_unchecked(row[r].wrapping_add(col)) };
            match g.layout {
                Layout::Plain => {
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = if r < rows { at(r) } else { 0 };
                    }
                }
                Layout::Swap | Layout::Ifma => {
                    for (r, o) in out.chunks_exact_mut(2).enumerate() {
                        let v = if r < rows { at(r) } else { 0 };
                        o[0] = v;
                        o[1] = if g.layout == Layout::Swap { v.rotate_left(32) } else { ifma_a(v) };
                    }
                }
            }
        }
    }
}

/// Packs `B[pc..pc+kc, jc..jc+nc]` into `g.nr`-column micro-panels: per k
/// step, the `g.nr` values of the row (then, for [`Layout::Ifma`], their
/// companions). Columns past `nc` are zero. Parallel over panels.
fn pack_b(g: Geom, b: View<'_>, pc: usize, kc: usize, jc: usize, nc: usize, dst: &mut [u64]) {
    let (nr_t, step) = (g.nr, g.b_step());
    let pack_panel = |jp: usize, panel: &mut [u64]| {
        let j0 = jp * nr_t;
        let cols = nr_t.min(nc - j0);
        #[cfg(target_arch = "x86_64")]
        if b.cs == 1 && nr_t == avx512::NR && g.layout != Layout::Swap && use_avx512() {
            let s = pc * b.rs + jc + j0;
            assert!(s + (kc - 1) * b.rs + cols <= b.data.len() && panel.len() == kc * step);
            let src = b.data[s..].as_ptr();
            // SAFETY: AVX-512F detected; rows p < kc of `cols` values from `src` lie inside
            // `b.data` (checked above); the panel holds kc steps.
            unsafe {
                if g.layout == Layout::Ifma {
                    avx512::pack_b_panel::<true>(src, b.rs, kc, cols, panel.as_mut_ptr());
                } else {
                    avx512::pack_b_panel::<false>(src, b.rs, kc, cols, panel.as_mut_ptr());
                }
            }
            return;
        }
        for p in 0..kc {
            let (row, extra) = panel[p * step..(p + 1) * step].split_at_mut(nr_t);
            if b.cs == 1 {
                let s = (pc + p) * b.rs + jc + j0;
                row[..cols].copy_from_slice(&b.data[s..s + cols]);
            } else {
                for c in 0..cols {
                    row[c] = b.at(pc + p, jc + j0 + c);
                }
            }
            row[cols..].fill(0);
            for (e, &v) in extra.iter_mut().zip(row.iter()) {
                *e = ifma_b(v);
            }
        }
    };
    if kc * nc >= 1 << 16 {
        dst.par_chunks_exact_mut(step * kc).enumerate().for_each(|(jp, panel)| pack_panel(jp, panel));
    } else {
        dst.chunks_exact_mut(step * kc).enumerate().for_each(|(jp, panel)| pack_panel(jp, panel));
    }
}

/// Fetches `rows` rows of `cols` elements at `c` (row stride `ldc`) into L2; a
/// prefetch never faults, so no pointer here is dereferenced.
#[inline(always)]
fn prefetch_tile_l2(c: *mut u64, ldc: usize, rows: usize, cols: usize) {
    #[cfg(target_arch = "x86_64")]
    for r in 0..rows {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let row = c.wrapping_add(r * ldc) as *const i8;
        // SAFETY: prefetches have no architectural effect and never fault.
        unsafe {
            _mm_prefetch::<_MM_HINT_T1>(row);
            _mm_prefetch::<_MM_HINT_T1>(row.wrapping_add(8 * cols - 1));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (c, ldc, rows, cols);
}

/// `C[mr x nr] += A_panel · B_panel` for one micro-tile.
///
/// # Safety
/// `c` must be valid for reads and writes of `mr` rows of `nr` elements with row stride `ldc`.
#[inline]
unsafe fn micro_tile(micro: Micro, kc: usize, pa: &[u64], pb: &[u64], c: *mut u64, ldc: usize, mr: usize, nr: usize) {
    #[cfg(target_arch = "x86_64")]
    match micro {
        Micro::Avx512Ifma => {
            assert!(pa.len() >= GEOM_IFMA.a_step() * kc && pb.len() >= GEOM_IFMA.b_step() * kc);
            assert!(mr <= avx512::MR_IFMA && nr <= avx512::NR);
            // SAFETY: AVX-512F and IFMA were detected at run time (`gemm_acc_with`); panel
            // lengths checked above; C per caller.
            return unsafe { avx512::kernel_ifma(kc, pa.as_ptr(), pb.as_ptr(), c, ldc, mr, nr) };
        }
        Micro::Avx512 => {
            assert!(pa.len() >= avx512::MR * kc && pb.len() >= avx512::NR * kc && mr <= avx512::MR);
            assert!(nr <= avx512::NR);
            // SAFETY: AVX-512F/DQ were detected at run time (`gemm_acc_with`); panel
            // lengths checked above; C per caller.
            return unsafe { avx512::kernel(kc, pa.as_ptr(), pb.as_ptr(), c, ldc, mr, nr) };
        }
        Micro::Avx2 => {
            assert!(pa.len() >= A_STEP * kc && pb.len() >= B_STEP * kc && mr <= MR && nr <= NR);
            // SAFETY: AVX2 was detected at run time; panel lengths checked above; C per caller.
            return unsafe { avx2::kernel(kc, pa.as_ptr(), pb.as_ptr(), c, ldc, mr, nr) };
        }
        Micro::Portable => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = micro;
    assert!(pa.len() >= A_STEP * kc && pb.len() >= B_STEP * kc && mr <= MR && nr <= NR);
    let mut tile = [[0u64; NR]; MR];
    kernel_portable(kc, pa, pb, &mut tile);
    for r in 0..mr {
        for j in 0..nr {
            // SAFETY: r < mr and j < nr, inside the region the caller vouches for.
            unsafe {
                let p = c.add(r * ldc + j);
                *p = (*p).wrapping_add(tile[r][j]);
            }
        }
    }
}

/// Portable micro-kernel on the same packed layout (full 64-bit multiplies).
fn kernel_portable(kc: usize, pa: &[u64], pb: &[u64], tile: &mut [[u64; NR]; MR]) {
    for (av, bv) in pa.chunks_exact(A_STEP).zip(pb.chunks_exact(B_STEP)).take(kc) {
        for r in 0..MR {
            let x = av[2 * r];
            for j in 0..NR {
                tile[r][j] = tile[r][j].wrapping_add(x.wrapping_mul(bv[j]));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{A_STEP, B_STEP, LANES, MR, NR, NV};
    use std::arch::x86_64::*;

    // The asm below is written for a 3 x 8 tile: 12 accumulators + 2 B
    // vectors + 1 broadcast + 1 product = all 16 ymm registers.
    const _: () = assert!(MR == 3 && NV == 2 && A_STEP == 6 && B_STEP == 8);

    /// One row of the micro-kernel: broadcast `a[r]`, then
    /// `lo[r][v] += b[v] ·_{u32 lo} a` and `cross[r][v] += b_swapped[v] ·_{u32} a`.
    macro_rules! row {
        ($aoff:literal, $soff:literal, $lo0:literal, $lo1:literal, $cr0:literal, $cr1:literal) => {
            concat!(
                "vpbroadcastq ymm14, qword ptr [{pa} + ",
                $aoff,
                "]\n",
                "vpmuludq ymm15, ymm14, ymm12\n",
                "vpaddq ",
                $lo0,
                ", ",
                $lo0,
                ", ymm15\n",
                "vpmuludq ymm15, ymm14, ymm13\n",
                "vpaddq ",
                $lo1,
                ", ",
                $lo1,
                ", ymm15\n",
                "vpbroadcastq ymm14, qword ptr [{pa} + ",
                $soff,
                "]\n",
                "vpmulld ymm15, ymm14, ymm12\n",
                "vpaddd ",
                $cr0,
                ", ",
                $cr0,
                ", ymm15\n",
                "vpmulld ymm15, ymm14, ymm13\n",
                "vpaddd ",
                $cr1,
                ", ",
                $cr1,
                ", ymm15\n",
            )
        };
    }

    /// AVX2 micro-kernel: `C[mr x nr] += A_panel · B_panel` over `kc` steps
    /// with the 32-bit-limb split (see the module doc).
    ///
    /// The k-loop is inline asm because LLVM, left to itself, narrows the
    /// broadcast loads (only 32 bits feed `vpmuludq`) into a zero-extend plus
    /// a register broadcast: two extra vector-ALU µops per row and k step,
    /// which cost ~30% here. Per k step: 2 B loads and 6 broadcasts (load
    /// port only), 6 `vpmuludq` + 6 `vpmulld`, 12 adds; on Zen 3 this runs at
    /// ~7.8 cycles per 24 multiply-adds (the two multiply pipes are shared
    /// with the adds), against 6 cycles for 48 float64 FMAs.
    ///
    /// # Safety
    /// The CPU must support AVX2; `pa` must hold `kc * A_STEP` and `pb`
    /// `kc * B_STEP` elements; `c` must be valid for `mr` rows of `nr`
    /// elements with row stride `ldc`, `mr <= MR`, `nr <= NR`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn kernel(
        kc: usize,
        pa: *const u64,
        pb: *const u64,
        c: *mut u64,
        ldc: usize,
        mr: usize,
        nr: usize,
    ) {
        // The C tile is read after the k-loop; fetch its rows now so the misses overlap it.
        for r in 0..mr {
            let row = c.wrapping_add(r * ldc) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(row);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(8 * NR - 1));
        }
        let z = _mm256_setzero_si256();
        let [mut l00, mut l01, mut c00, mut c01] = [z; 4];
        let [mut l10, mut l11, mut c10, mut c11] = [z; 4];
        let [mut l20, mut l21, mut c20, mut c21] = [z; 4];
        if kc > 0 {
            // SAFETY: reads kc steps of both panels (caller's contract); writes only registers.
            unsafe {
                std::arch::asm!(
                    "2:",
                    "vmovdqu ymm12, ymmword ptr [{pb}]",
                    "vmovdqu ymm13, ymmword ptr [{pb} + 32]",
                    row!("0", "8", "ymm0", "ymm1", "ymm2", "ymm3"),
                    row!("16", "24", "ymm4", "ymm5", "ymm6", "ymm7"),
                    row!("32", "40", "ymm8", "ymm9", "ymm10", "ymm11"),
                    "add {pa}, 48",
                    "add {pb}, 64",
                    "dec {k}",
                    "jnz 2b",
                    pa = inout(reg) pa => _,
                    pb = inout(reg) pb => _,
                    k = inout(reg) kc => _,
                    inout("ymm0") l00, inout("ymm1") l01, inout("ymm2") c00, inout("ymm3") c01,
                    inout("ymm4") l10, inout("ymm5") l11, inout("ymm6") c10, inout("ymm7") c11,
                    inout("ymm8") l20, inout("ymm9") l21, inout("ymm10") c20, inout("ymm11") c21,
                    out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                    options(readonly, nostack),
                );
            }
        }
        let himask = _mm256_set1_epi64x(0xffff_ffff_0000_0000u64 as i64);
        // Cross lane = [c0 | c1] (u32 halves): (c0 + c1) << 32 = (lane << 32) + (lane & HI).
        let fold = |lo: __m256i, cr: __m256i| {
            let hi = _mm256_add_epi64(_mm256_slli_epi64(cr, 32), _mm256_and_si256(cr, himask));
            _mm256_add_epi64(lo, hi)
        };
        let tile =
            [[fold(l00, c00), fold(l01, c01)], [fold(l10, c10), fold(l11, c11)], [fold(l20, c20), fold(l21, c21)]];
        if mr == MR && nr == NR {
            for (r, row) in tile.iter().enumerate() {
                for (v, &t) in row.iter().enumerate() {
                    // SAFETY: a full tile lies inside C (caller's contract).
                    unsafe {
                        let p = c.add(r * ldc + v * LANES) as *mut __m256i;
                        _mm256_storeu_si256(p, _mm256_add_epi64(_mm256_loadu_si256(p), t));
                    }
                }
            }
        } else {
            let mut buf = [[0u64; NR]; MR];
            for (r, row) in tile.iter().enumerate() {
                for (v, &t) in row.iter().enumerate() {
                    // SAFETY: buf[r] has NR = NV * LANES elements.
                    unsafe { _mm256_storeu_si256(buf[r].as_mut_ptr().add(v * LANES) as *mut __m256i, t) };
                }
            }
            for r in 0..mr {
                for j in 0..nr {
                    // SAFETY: r < mr, j < nr: inside C (caller's contract).
                    unsafe {
                        let p = c.add(r * ldc + j);
                        *p = (*p).wrapping_add(buf[r][j]);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Rows of the micro-tile: 14 x 16 needs 28 accumulators, 2 B vectors,
    /// 1 broadcast A value and 1 product: all 32 zmm registers. (Heights 8 to
    /// 14 measured the same on the micro-kernel bench; 14 loads B least.)
    pub(super) const MR: usize = 14;
    /// u64 lanes per zmm vector.
    const LANES: usize = 8;
    /// Columns of the micro-tile: two zmm vectors.
    pub(super) const NR: usize = 2 * LANES;

    /// AVX-512 micro-kernel: `C[mr x nr] += A_panel · B_panel` over `kc`
    /// steps, with `vpmullq` (the low 64 bits of the 64 x 64-bit product,
    /// exactly the product in Z_2^64) and `vpaddq`. Per k step: 2 B loads,
    /// 28 `vpmullq` with a broadcast A operand, 28 adds.
    ///
    /// Measured against the 32-bit-limb form of the AVX2 kernel widened to
    /// zmm (`vpmuludq` + `vpmulld` on a half-swapped A, a 7 x 16 tile): the
    /// `vpmullq` form runs faster on Sapphire Rapids (see `microbench`: about
    /// 10 against 6.8 GMAC/s on one core), since `vpmullq` is 3 µops against
    /// 1 + 2 µops and one more add for the limbs. Where the CPU has IFMA,
    /// `kernel_ifma` (3 µops per 8 products, ~13 GMAC/s) is preferred.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and DQ; `pa` must hold `kc * MR` and
    /// `pb` `kc * NR` elements; `c` must be valid for `mr` rows of `nr`
    /// elements with row stride `ldc`, `mr <= MR`, `nr <= NR`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn kernel(
        kc: usize,
        pa: *const u64,
        pb: *const u64,
        c: *mut u64,
        ldc: usize,
        mr: usize,
        nr: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe { kernel_rows::<MR>(kc, pa, pb, c, ldc, mr, nr) }
    }

    /// Lane masks of the two 8-lane vectors of a 16-column row holding `n` columns.
    #[inline(always)]
    fn col_masks(n: usize) -> (__mmask8, __mmask8) {
        let m0 = if n >= LANES { 0xff } else { ((1u32 << n) - 1) as __mmask8 };
        let m1 = if n >= NR { 0xff } else { ((1u32 << n.saturating_sub(LANES)) - 1) as __mmask8 };
        (m0, m1)
    }

    /// The C tile's first `mr` rows of `nr` columns as `R` rows of two vectors, zero
    /// elsewhere (masked loads: nothing outside the tile is read).
    ///
    /// # Safety
    /// AVX-512F; `c + r * ldc + j` readable for `r < mr <= R`, `j < nr <= NR`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_c_tile<const R: usize>(c: *const u64, ldc: usize, mr: usize, nr: usize) -> [[__m512i; 2]; R] {
        let (m0, m1) = col_masks(nr);
        let mut tile = [[_mm512_setzero_si512(); 2]; R];
        for (r, row) in tile.iter_mut().enumerate().take(mr) {
            // SAFETY: row r < mr, columns under the masks < nr (caller's contract).
            unsafe {
                let p = c.add(r * ldc) as *const i64;
                *row = [_mm512_maskz_loadu_epi64(m0, p), _mm512_maskz_loadu_epi64(m1, p.wrapping_add(LANES))];
            }
        }
        tile
    }

    /// [`kernel`] for an `R x 16` tile (`pa` holds `kc * R`), `R <= 14`; other
    /// values of `R` are only for the tile-size measurement in `microbench`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn kernel_rows<const R: usize>(
        kc: usize,
        pa: *const u64,
        pb: *const u64,
        c: *mut u64,
        ldc: usize,
        mr: usize,
        nr: usize,
    ) {
        // Column masks of the two vectors: the last tile of a block may be narrower.
        let (m0, m1) = col_masks(nr);
        // The accumulators start from the C tile (rows past `mr` from zero): its loads
        // overlap the k-loop instead of stalling the write-back after it (see `kernel_ifma`).
        // SAFETY: forwarded contract (C holds `mr` rows of `nr` columns at stride `ldc`).
        let mut acc = unsafe { load_c_tile::<R>(c, ldc, mr, nr) };
        for p in 0..kc {
            // SAFETY: p < kc: inside both panels (caller's contract).
            unsafe {
                let b = pb.add(p * NR) as *const i64;
                let b0 = _mm512_loadu_epi64(b);
                let b1 = _mm512_loadu_epi64(b.add(LANES));
                let a = pa.add(p * R);
                for (r, row) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_epi64(*a.add(r) as i64);
                    row[0] = _mm512_add_epi64(row[0], _mm512_mullo_epi64(x, b0));
                    row[1] = _mm512_add_epi64(row[1], _mm512_mullo_epi64(x, b1));
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(mr) {
            // SAFETY: as for the loads above; masked-off lanes are not written.
            unsafe {
                let p = c.add(r * ldc) as *mut i64;
                _mm512_mask_storeu_epi64(p, m0, row[0]);
                _mm512_mask_storeu_epi64(p.wrapping_add(LANES), m1, row[1]);
            }
        }
    }

    /// Packs one B micro-panel of `NR` columns from rows `p < kc` at `src + p * rs`:
    /// per k step the row's `cols` values, zero past `cols`, then (for IFMA) their
    /// companions [`super::ifma_b`]. Masked loads, so nothing past `cols` is read.
    ///
    /// # Safety
    /// AVX-512F; `src + p * rs + c` readable for `p < kc`, `c < cols <= NR`;
    /// `dst` writable for `kc * NR` (`2 * kc * NR` with `IFMA`) elements.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_b_panel<const IFMA: bool>(
        src: *const u64,
        rs: usize,
        kc: usize,
        cols: usize,
        dst: *mut u64,
    ) {
        let (m0, m1) = col_masks(cols);
        let step = if IFMA { 2 * NR } else { NR };
        for p in 0..kc {
            // SAFETY: masked-off lanes are not read; the rest is the caller's contract.
            unsafe {
                let row = src.wrapping_add(p * rs) as *const i64;
                let v0 = _mm512_maskz_loadu_epi64(m0, row);
                let v1 = _mm512_maskz_loadu_epi64(m1, row.wrapping_add(LANES));
                let out = dst.add(p * step) as *mut i64;
                _mm512_storeu_epi64(out, v0);
                _mm512_storeu_epi64(out.add(LANES), v1);
                if IFMA {
                    // (x >> 52) << 16 | (x mod 2^12) << 40
                    let comp = |x: __m512i| {
                        _mm512_or_si512(
                            _mm512_slli_epi64::<16>(_mm512_srli_epi64::<52>(x)),
                            _mm512_srli_epi64::<12>(_mm512_slli_epi64::<52>(x)),
                        )
                    };
                    _mm512_storeu_epi64(out.add(NR), comp(v0));
                    _mm512_storeu_epi64(out.add(NR + LANES), comp(v1));
                }
            }
        }
    }

    /// Rows of the IFMA micro-tile: 6 x 16 needs 24 accumulators (low and
    /// high per vector), 4 B vectors (values and companions) and 2 broadcasts.
    pub(super) const MR_IFMA: usize = 6;

    /// IFMA micro-kernel: `C[mr x nr] += A_panel · B_panel` over `kc` steps
    /// with three 52-bit multiply-adds per 8 products and no separate adds.
    ///
    /// `vpmadd52luq`/`vpmadd52huq acc, x, y` add the low/high 52 bits of the
    /// 104-bit product of the low 52 bits of `x` and `y` to the 64-bit lanes of
    /// `acc` (mod 2^64). With `x = x0 + x1·2^52` (`x1` of 12 bits),
    /// `a·b mod 2^64 = lo52(a0 b0) + 2^52 (hi52(a0 b0) + a0 b1 + a1 b0) mod 2^64`,
    /// where the bracket only counts mod 2^12. Its cross term comes from one
    /// more high product of the packed companions `A = a1·2^12 + (a0 mod 2^12)·2^36`
    /// and `B = b1·2^16 + (b0 mod 2^12)·2^40` (both below 2^52):
    /// `A·B = (a1 b0' + a0' b1)·2^52 + a1 b1·2^28 + a0' b0'·2^76`, with `a0' = a0 mod 2^12`,
    /// `b0' = b0 mod 2^12`; `a1 b1·2^28 < 2^52` carries nothing into bit 52, and
    /// the `2^76` term lands at bit 24 of `hi52`, so `hi52(A·B) ≡ a1 b0' + a0' b1`
    /// (mod 2^12). Hence, per k step, `lo += lo52(a, b)`, `hi += hi52(a, b)`,
    /// `hi += hi52(A, B)`, and at the end `C += lo + (hi << 52)`: exact in Z_2^64
    /// (`lo` starts from the C tile itself, so the end is `C = lo + (hi << 52)`).
    /// Against `vpmullq` + `vpaddq` (4 µops per 8 products) this is 3 µops.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and IFMA; `pa` must hold `kc * 2 * MR_IFMA`
    /// and `pb` `kc * 2 * NR` elements ([`super::Layout::Ifma`]); `c` must be valid
    /// for `mr` rows of `nr` elements with row stride `ldc`, `mr <= MR_IFMA`, `nr <= NR`.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn kernel_ifma(
        kc: usize,
        pa: *const u64,
        pb: *const u64,
        c: *mut u64,
        ldc: usize,
        mr: usize,
        nr: usize,
    ) {
        let z = _mm512_setzero_si512();
        let (m0, m1) = col_masks(nr);
        // `lo` starts from the C tile (rows past `mr` from zero), so the write-back is
        // stores only: loaded after the k-loop, C cost ~6% of the kernel's time at 1024^3
        // in stalls on the first row even with the rows prefetched (perf, cpu-clock),
        // while at the start its latency overlaps the `hi` chains. The driver fetches the
        // tile into L2 one call ahead.
        // SAFETY: forwarded contract (C holds `mr` rows of `nr` columns at stride `ldc`).
        let mut lo = unsafe { load_c_tile::<MR_IFMA>(c, ldc, mr, nr) };
        let mut hi = [[z; 2]; MR_IFMA];
        for p in 0..kc {
            // SAFETY: p < kc: inside both panels (caller's contract).
            unsafe {
                let b = pb.add(p * 2 * NR) as *const i64;
                let (b0, b1) = (_mm512_loadu_epi64(b), _mm512_loadu_epi64(b.add(LANES)));
                let (h0, h1) = (_mm512_loadu_epi64(b.add(NR)), _mm512_loadu_epi64(b.add(NR + LANES)));
                let a = pa.add(p * 2 * MR_IFMA);
                for r in 0..MR_IFMA {
                    let x = _mm512_set1_epi64(*a.add(2 * r) as i64);
                    let xc = _mm512_set1_epi64(*a.add(2 * r + 1) as i64);
                    lo[r][0] = _mm512_madd52lo_epu64(lo[r][0], x, b0);
                    lo[r][1] = _mm512_madd52lo_epu64(lo[r][1], x, b1);
                    hi[r][0] = _mm512_madd52hi_epu64(hi[r][0], x, b0);
                    hi[r][1] = _mm512_madd52hi_epu64(hi[r][1], x, b1);
                    hi[r][0] = _mm512_madd52hi_epu64(hi[r][0], xc, h0);
                    hi[r][1] = _mm512_madd52hi_epu64(hi[r][1], xc, h1);
                }
            }
        }
        for r in 0..mr {
            let t0 = _mm512_add_epi64(lo[r][0], _mm512_slli_epi64::<52>(hi[r][0]));
            let t1 = _mm512_add_epi64(lo[r][1], _mm512_slli_epi64::<52>(hi[r][1]));
            // SAFETY: as for the loads above; masked-off lanes are not written.
            unsafe {
                let p = c.add(r * ldc) as *mut i64;
                _mm512_mask_storeu_epi64(p, m0, t0);
                _mm512_mask_storeu_epi64(p.wrapping_add(LANES), m1, t1);
            }
        }
    }

    /// The 32-bit-limb alternative, for the measurement in `microbench` only:
    /// the AVX2 kernel's split widened to zmm on a 7 x 16 tile (28
    /// accumulators). `pa` holds, per k step, each of the 7 values and its
    /// half-swapped copy; the full tile is written to `out` (row stride 16).
    #[cfg(test)]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn kernel_limbs(kc: usize, pa: *const u64, pb: *const u64, out: &mut [[u64; NR]; 7]) {
        let z = _mm512_setzero_si512();
        let mut lo = [[z; 2]; 7];
        let mut cr = [[z; 2]; 7];
        for p in 0..kc {
            // SAFETY: p < kc: inside both panels (caller's contract).
            unsafe {
                let b = pb.add(p * NR) as *const i64;
                let b0 = _mm512_loadu_epi64(b);
                let b1 = _mm512_loadu_epi64(b.add(LANES));
                let a = pa.add(p * 14);
                for r in 0..7 {
                    let x = _mm512_set1_epi64(*a.add(2 * r) as i64);
                    let xs = _mm512_set1_epi64(*a.add(2 * r + 1) as i64);
                    lo[r][0] = _mm512_add_epi64(lo[r][0], _mm512_mul_epu32(x, b0));
                    lo[r][1] = _mm512_add_epi64(lo[r][1], _mm512_mul_epu32(x, b1));
                    cr[r][0] = _mm512_add_epi32(cr[r][0], _mm512_mullo_epi32(xs, b0));
                    cr[r][1] = _mm512_add_epi32(cr[r][1], _mm512_mullo_epi32(xs, b1));
                }
            }
        }
        let himask = _mm512_set1_epi64(0xffff_ffff_0000_0000u64 as i64);
        for r in 0..7 {
            for v in 0..2 {
                let c = cr[r][v];
                let hi = _mm512_add_epi64(_mm512_slli_epi64::<32>(c), _mm512_and_si512(c, himask));
                let t = _mm512_add_epi64(lo[r][v], hi);
                // SAFETY: out[r] has 16 elements.
                unsafe { _mm512_storeu_epi64(out[r].as_mut_ptr().add(v * LANES) as *mut i64, t) };
            }
        }
    }
}

/// IFMA with three ops per product (see `ifma3_pack`).
#[cfg(all(test, target_arch = "x86_64"))]
#[target_feature(enable = "avx512f,avx512ifma")]
unsafe fn kernel_ifma3(kc: usize, pa: *const u64, pb: *const u64, out: &mut [[u64; 16]; 6]) {
    use std::arch::x86_64::*;
    let z = _mm512_setzero_si512();
    let mut lo = [[z; 2]; 6];
    let mut hi = [[z; 2]; 6];
    for p in 0..kc {
        // SAFETY: p < kc: inside both panels.
        unsafe {
            let b = pb.add(p * 32) as *const i64;
            let (b0, b1) = (_mm512_loadu_epi64(b), _mm512_loadu_epi64(b.add(8)));
            let (h0, h1) = (_mm512_loadu_epi64(b.add(16)), _mm512_loadu_epi64(b.add(24)));
            let a = pa.add(p * 12);
            for r in 0..6 {
                let x = _mm512_set1_epi64(*a.add(2 * r) as i64);
                let xh = _mm512_set1_epi64(*a.add(2 * r + 1) as i64);
                lo[r][0] = _mm512_madd52lo_epu64(lo[r][0], x, b0);
                lo[r][1] = _mm512_madd52lo_epu64(lo[r][1], x, b1);
                hi[r][0] = _mm512_madd52hi_epu64(hi[r][0], x, b0);
                hi[r][1] = _mm512_madd52hi_epu64(hi[r][1], x, b1);
                hi[r][0] = _mm512_madd52hi_epu64(hi[r][0], xh, h0);
                hi[r][1] = _mm512_madd52hi_epu64(hi[r][1], xh, h1);
            }
        }
    }
    for r in 0..6 {
        for v in 0..2 {
            let t = _mm512_add_epi64(lo[r][v], _mm512_slli_epi64::<52>(hi[r][v]));
            // SAFETY: out[r] has 16 elements.
            unsafe { _mm512_storeu_epi64(out[r].as_mut_ptr().add(v * 8) as *mut i64, t) };
        }
    }
}

/// Micro-kernel speed on L1-resident panels (`cargo test --release -p
/// syft-mpc-ring --lib microbench -- --ignored --nocapture`): the AVX-512
/// `vpmullq` kernel at several tile heights against the 32-bit-limb form.
#[cfg(all(test, target_arch = "x86_64"))]
mod microbench {
    use super::*;

    fn run(name: &str, macs_per_call: usize, mut f: impl FnMut()) {
        let reps = 20_000_000 / macs_per_call;
        f();
        let mut best = f64::INFINITY;
        for _ in 0..40 {
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            best = best.min(t0.elapsed().as_secs_f64());
        }
        eprintln!("{name}: {:.2} GMAC/s", (reps * macs_per_call) as f64 / best / 1e9);
    }

    #[test]
    #[ignore]
    fn micro_speed() {
        if !use_avx512() {
            eprintln!("no AVX-512");
            return;
        }
        let kc = 256;
        let pa: Vec<u64> = (0..14 * kc as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let pb: Vec<u64> = (0..16 * kc as u64).map(|i| i.wrapping_mul(0xBF58_476D_1CE4_E5B9)).collect();
        let mut c = vec![0u64; 14 * 16];
        macro_rules! rows {
            ($r:literal) => {
                run(concat!("vpmullq ", $r, " x 16"), $r * 16 * kc, || unsafe {
                    avx512::kernel_rows::<$r>(kc, pa.as_ptr(), pb.as_ptr(), c.as_mut_ptr(), 16, $r, 16)
                });
            };
        }
        rows!(8);
        rows!(10);
        rows!(12);
        rows!(14);
        let mut out = [[0u64; 16]; 7];
        run("limbs 7 x 16", 7 * 16 * kc, || unsafe { avx512::kernel_limbs(kc, pa.as_ptr(), pb.as_ptr(), &mut out) });
        std::hint::black_box((&c, &out));
        if std::arch::is_x86_feature_detected!("avx512ifma") {
            let mut o6 = [[0u64; 16]; 6];
            let m12 = (1u64 << 12) - 1;
            let pa3: Vec<u64> =
                pa.iter().take(6 * kc).flat_map(|&x| [x, ((x >> 52) << 12) | ((x & m12) << 36)]).collect();
            let pb3: Vec<u64> = pb
                .chunks(16)
                .flat_map(|row| {
                    row.iter()
                        .copied()
                        .chain(row.iter().map(|&x| ((x & m12) << 40) | ((x >> 52) << 16)))
                        .collect::<Vec<_>>()
                })
                .collect();
            unsafe { kernel_ifma3(1, pa3.as_ptr(), pb3.as_ptr(), &mut o6) };
            for r in 0..6 {
                for j in 0..16 {
                    assert_eq!(o6[r][j], pa[r].wrapping_mul(pb[j]), "ifma3 exact");
                }
            }
            run("ifma3 6 x 16", 6 * 16 * kc, || unsafe { kernel_ifma3(kc, pa3.as_ptr(), pb3.as_ptr(), &mut o6) });
            std::hint::black_box(&o6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
        let mut c = vec![0u64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] = c[i * n + j].wrapping_add(a[i * k + p].wrapping_mul(b[p * n + j]));
                }
            }
        }
        c
    }

    /// `c += a · b` with `kern`, `a` (m x k) and `b` (k x n) row-major.
    fn gemm_rows(kern: Kernel, a: &[u64], b: &[u64], m: usize, k: usize, n: usize, c: &mut [u64]) {
        gemm_acc_with(kern, View { data: a, rs: k, cs: 1 }, View { data: b, rs: n, cs: 1 }, m, k, n, c, n);
    }

    fn data(len: usize, mut s: u64) -> Vec<u64> {
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            })
            .collect()
    }

    /// Entries at the edges of the limb splits (the 32-bit halves, the IFMA
    /// 52-bit and 12-bit pieces) in every available kernel, ragged tiles.
    #[test]
    fn limb_edge_values() {
        let edges = [
            0u64,
            1,
            u64::MAX,
            (1 << 52) - 1,
            1 << 52,
            0xFFF << 52,
            0xFFF,
            (1 << 32) - 1,
            1 << 32,
            0x8000_0000_0000_0000,
            0xFFF0_0000_0000_0FFF,
            0x000F_FFFF_FFFF_F000,
        ];
        let (m, k, n) = (29, 300, 37);
        let pick = |len: usize, s: u64| -> Vec<u64> {
            data(len, s).iter().map(|&r| edges[(r % edges.len() as u64) as usize]).collect()
        };
        let (a, b) = (pick(m * k, 3), pick(k * n, 4));
        let want = naive(&a, &b, m, k, n);
        for kern in available_kernels() {
            let mut c = vec![0u64; m * n];
            gemm_rows(kern, &a, &b, m, k, n, &mut c);
            assert_eq!(c, want, "{kern}");
        }
    }

    /// All-ones limbs (every entry `u64::MAX`, so each product is 1 and every
    /// 52/12-bit piece is full) and shapes around the tiles and depth blocks of
    /// every available kernel: `k` one past, one short of and a few blocks over the
    /// depth block (256 for the AVX-512 kernels, 384 for AVX2), `m` and `n` off the
    /// 6/14-row and 16-column tiles; C starts non-zero (the kernels accumulate).
    #[test]
    fn all_ones_and_block_edges() {
        for kern in available_kernels() {
            for &(m, k, n) in &[(13, 129, 35), (29, 255, 17), (6, 257, 16), (15, 513, 33), (97, 300, 47), (1, 1030, 31)]
            {
                let (a, b) = (vec![u64::MAX; m * k], vec![u64::MAX; k * n]);
                let mut c = vec![7u64; m * n];
                gemm_rows(kern, &a, &b, m, k, n, &mut c);
                assert!(c.iter().all(|&x| x == 7 + k as u64), "{kern} all ones {m}x{k}x{n}");
                let (a, b) = (data(m * k, 5 + k as u64), data(k * n, 6 + m as u64));
                let want = naive(&a, &b, m, k, n);
                let mut c = vec![0u64; m * n];
                gemm_rows(kern, &a, &b, m, k, n, &mut c);
                assert_eq!(c, want, "{kern} {m}x{k}x{n}");
            }
        }
    }

    /// Both micro-kernels (AVX2 where the CPU has it, and the portable one,
    /// which no x86 test would otherwise reach), strided operands, ragged tiles.
    #[test]
    fn both_kernels_and_strided_views() {
        for avx2 in available_kernels() {
            for &(m, k, n) in
                &[(1, 1, 1), (3, 8, 8), (7, 300, 13), (50, 257, 33), (100, 31, 4100), (0, 5, 5), (4, 0, 4)]
            {
                let a = data(m * k, 1 + m as u64);
                let b = data(k * n, 2 + n as u64);
                let want = naive(&a, &b, m, k, n);
                let mut c = vec![0u64; m * n];
                gemm_rows(avx2, &a, &b, m, k, n, &mut c);
                assert_eq!(c, want, "avx2={avx2} {m}x{k}x{n}");
                // Same product from transposed storage (column-major views).
                let at: Vec<u64> = (0..k * m).map(|t| a[(t % m) * k + t / m]).collect();
                let bt: Vec<u64> = (0..n * k).map(|t| b[(t % k) * n + t / k]).collect();
                let mut c2 = vec![0u64; m * n];
                gemm_acc_with(
                    avx2,
                    View { data: &at, rs: 1, cs: m },
                    View { data: &bt, rs: 1, cs: k },
                    m,
                    k,
                    n,
                    &mut c2,
                    n,
                );
                assert_eq!(c2, want, "avx2={avx2} {m}x{k}x{n} transposed views");
            }
        }
    }
}
