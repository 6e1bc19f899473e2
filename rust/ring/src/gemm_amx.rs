//! Z_2^64 matrix product on Intel AMX-INT8 (`TDPBUUD`).
//!
//! # Method: byte-limb decomposition of the ring product
//!
//! Write each entry in byte limbs, `x = Σ_{i<8} x_i 2^{8i}`. Modulo 2^64,
//! `x·y = Σ_{i+j<8} 2^{8(i+j)} x_i y_j`, so with `A_i`, `B_j` the u8 matrices
//! of the limbs,
//!
//! ```text
//! A·B mod 2^64 = Σ_{s=0..7} 2^{8s} C_s,   C_s = Σ_{i+j=s} A_i · B_j   (36 u8 GEMMs)
//! ```
//!
//! AMX `TDPBUUD tmm_c, tmm_a, tmm_b` (Intel SDM vol. 2, "TDPBUUD"; Intel
//! Architecture Instruction Set Extensions Programming Reference, ch. 3)
//! multiplies unsigned bytes of A by unsigned bytes of B, sums groups of four
//! products and adds them to 32-bit lanes of C, wrapping mod 2^32 (no
//! saturation). The tiles (palette 1): A is 16 rows x 64 bytes (16 rows x 64
//! k), B is 16 rows x 64 bytes in the VNNI layout (row `q` holds, for each of
//! 16 columns `n`, the 4 bytes `B[4q..4q+4][n]`), C is 16 x 16 i32.
//!
//! # Exactness
//!
//! Only `C_s mod 2^{64-8s}` is needed. For `s >= 4` that is at most 32 bits,
//! so the i32 wraparound of the accumulator is harmless. For `s <= 3` the true
//! value must fit in 32 bits: `C_s <= (s+1)·K·255² < 2^32` holds for
//! `K <= 16_384` (`4·16_384·65_025 = 4_261_478_400 < 2^32 = 4_294_967_296`).
//! The product is therefore computed in depth blocks of [`KC`] `<= 16_384`
//! bytes, and each block's `Σ_s (C_s as u32 as u64) << 8s` is added into the
//! u64 output with wrapping arithmetic, which is exact in Z_2^64.
//!
//! # Blocking and loop order
//!
//! ```text
//! for jc in n step NC:                  B block: KC x NC, 8 limbs, VNNI tiles, packed once (shared)
//!   for pc in k step KC:
//!     pack B[pc.., jc..]
//!     par for ic in m step MC:          A block: MC x KC, 8 limbs, row tiles, packed per task
//!       ldtilecfg; pack A[ic.., pc..]
//!       for each 32-column B panel:     B panel (8 limbs x KC x 32, 256 KiB) stays in L2
//!         for each 32-row A panel:      micro-kernel below, on a 32 x 32 output block
//!       tilerelease
//! ```
//!
//! Micro-kernel, on a 32 x 32 output block over the block depth: four sweeps per
//! 16-column half, one per pair of sums `(s0, s0 + 1)`, `s0 = 0, 2, 4, 6`. tmm0..3
//! accumulate `C_{s0}` and `C_{s0+1}` for the two 16-row halves; per k step of 64 the
//! A limbs `i = 0..=s0+1` pass through tmm4/5 (both row halves) while the B limbs
//! slide through tmm6/7: limb `i` needs `B_{s0+1-i}`, already loaded for limb `i - 1`,
//! and `B_{s0-i}`, the one new tile. So `3·s0 + 6` tile loads feed `4·s0 + 6`
//! `TDPBUUD` (120 loads per 144 products per block and k step, against 144 with 2 x 2
//! tiles per limb pair); after each sweep the four tiles are stored, and the 8 stored
//! `C_s` are combined into the u64 output. Every limb is packed with each tile
//! contiguous (1 KiB, row stride 64) so the tile loads stream whole cache lines.
//!
//! What bounds it (Sapphire Rapids, one core, measured 2026-12-06 with `#[ignore]`d
//! loops; docs/BENCHMARKS.md, "AMX micro-kernel: the tile loads from L2 are the bound"):
//! `TDPBUUD` alone takes ≈ 7.0 ns (5.9 in one run; 2.3 T u8 multiply-adds/s, 64 G ring
//! MAC/s) on 1, 4 or 6 accumulators alike; a 1 KiB tile load costs
//! ≈ 3.3 ns from L1 but ≈ 8 ns from L2. The A and B panels of one block (8 limbs x 32 KiB
//! each) live in L2, so the kernel runs at ≈ 10 ns per tile load: 9.8 ns per `TDPBUUD`
//! with 2 x 2 tiles, 8.7 ns with the sliding window. Keeping tiles in L1 across sweeps
//! (k chunks with the accumulators spilled, A limb outer) measured slower.

use crate::gemm::{give_buf, take_buf_stale, OutPtr, View};
use rayon::prelude::*;
use std::cell::Cell;
use std::sync::OnceLock;

/// Depth of a packed block in k (bytes of each limb row). A multiple of 64 and
/// at most 16_384, the exactness bound in the module doc. Measured at 1024^3 on
/// Sapphire Rapids: 256 -> 512 -> 1024 gave +10% each step (the 8 x 4 tile
/// stores and the combine are paid once per block); 2048 (with `MC` = 64, so the A
/// block still fits L2) was 3-6 % slower than 1024 with the sliding-window kernel.
const KC: usize = 1024;
/// Rows of a packed A block; a multiple of the 32-row micro-tile.
const MC: usize = 128;
/// Columns of a packed B block; a multiple of the 32-column micro-tile.
const NC: usize = 1024;

const _: () = assert!(KC / 64 * 64 == KC && KC <= 16_384 && MC / T * T == MC && NC / T * T == NC);
/// Rows and columns of the output block of the micro-kernel.
const T: usize = 32;
/// Bytes of one tile (16 rows x 64 bytes).
const TILE: usize = 1024;
/// Bytes per k step of 64 in one limb of a 32-row (or 32-column) panel: two tiles.
const KSTEP: usize = 2 * TILE;

/// One 64-byte line: packed buffers are vectors of these so tiles start on cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

const ZERO_LINE: Line = Line([0; 64]);

thread_local! {
    static BUF_A: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
    static BUF_B: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

fn bytes_mut(v: &mut [Line]) -> &mut [u8] {
    // SAFETY: `Line` is 64 plain bytes (repr(C), no padding), so the vector is
    // `64 * len` initialised bytes; the lifetime is the borrow's.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 64) }
}

fn bytes(v: &[Line]) -> &[u8] {
    // SAFETY: as in `bytes_mut`.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 64) }
}

/// Whether the AMX path can run here, or why not. Checked once per process:
/// AVX-512F (the combine step uses it), CPUID.(7,0):EDX bits 24 (AMX-TILE)
/// and 25 (AMX-INT8), OSXSAVE and XCR0 bits 17/18 (tile config and tile data
/// enabled by the OS), then Linux's per-process permission for the tile data
/// state, `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, which is
/// granted to the whole process (every thread, present and future).
pub(crate) fn amx_support() -> Result<(), String> {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    STATE.get_or_init(detect).clone()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> Result<(), String> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    if !std::arch::is_x86_feature_detected!("avx512f") {
        return Err("no AVX-512F".into());
    }
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is read only if the max leaf allows it.
    // (`__cpuid` is a safe fn in recent Rust, unsafe in older ones.)
    #[allow(unused_unsafe)]
    let (max_leaf, ecx1) = unsafe { (__cpuid(0).eax, __cpuid(1).ecx) };
    if max_leaf < 7 {
        return Err("CPUID has no leaf 7".into());
    }
    // SAFETY: leaf 7 exists (checked above).
    #[allow(unused_unsafe)]
    let edx7 = unsafe { __cpuid_count(7, 0).edx };
    if edx7 & (1 << 24) == 0 || edx7 & (1 << 25) == 0 {
        return Err("CPU lacks AMX-TILE/AMX-INT8 (CPUID.7.0:EDX bits 24/25)".into());
    }
    if ecx1 & (1 << 27) == 0 {
        return Err("OS has not enabled XSAVE (OSXSAVE clear)".into());
    }
    let xcr0_lo: u32;
    // SAFETY: XGETBV with ECX=0 is valid when OSXSAVE is set (checked above); it only writes EAX/EDX.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") xcr0_lo, out("edx") _, options(nomem, nostack, preserves_flags));
    }
    if xcr0_lo & (1 << 17) == 0 || xcr0_lo & (1 << 18) == 0 {
        return Err("OS has not enabled the AMX tile state (XCR0 bits 17/18)".into());
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM, 18) only asks the kernel to let this
    // process use the AMX tile data state; it touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
    if rc != 0 {
        return Err(format!(
            "Linux refused AMX permission (arch_prctl ARCH_REQ_XCOMP_PERM: {})",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> Result<(), String> {
    Err("AMX path is built only for x86-64 Linux".into())
}

/// `c (m x n, row stride ldc) += a (m x k) · b (k x n)` in Z_2^64 on AMX.
///
/// Panics if AMX is not usable ([`amx_support`]) or the output is too small.
pub(crate) fn gemm_acc(a: View<'_>, b: View<'_>, m: usize, k: usize, n: usize, c: &mut [u64], ldc: usize) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "gemm: output buffer too small");
    if let Err(why) = amx_support() {
        panic!("AMX kernel requested but not usable: {why}");
    }
    imp::gemm_acc(a, b, m, k, n, c, ldc)
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub(super) fn gemm_acc(
        _: super::View<'_>,
        _: super::View<'_>,
        _: usize,
        _: usize,
        _: usize,
        _: &mut [u64],
        _: usize,
    ) {
        unreachable!("amx_support() is Err off x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;

    /// Palette-1 tile configuration: every tile 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct TileCfg([u8; 64]);

    fn tile_cfg() -> TileCfg {
        let mut c = [0u8; 64];
        c[0] = 1; // palette 1
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes()); // colsb
            c[48 + t] = 16; // rows
        }
        TileCfg(c)
    }

    /// Loads the tile configuration on this thread for its lifetime and
    /// releases the tiles (`TILERELEASE`) on drop, panic included. Not `Send`:
    /// the configuration belongs to the thread that loaded it.
    pub(super) struct Tiles(std::marker::PhantomData<*const ()>);

    impl Tiles {
        /// # Safety
        /// AMX must be usable ([`amx_support`] is `Ok`).
        pub(super) unsafe fn load() -> Tiles {
            let cfg = tile_cfg();
            // SAFETY: AMX is usable (caller); LDTILECFG reads the 64-byte config.
            unsafe { std::arch::asm!("ldtilecfg [{0}]", in(reg) &cfg as *const TileCfg, options(nostack, readonly)) };
            Tiles(std::marker::PhantomData)
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            // SAFETY: the configuration was loaded by `Tiles::load`, so AMX is usable.
            unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
        }
    }

    pub(super) fn gemm_acc(a: View<'_>, b: View<'_>, m: usize, k: usize, n: usize, c: &mut [u64], ldc: usize) {
        let vbmi = has_vbmi();
        let threads = rayon::current_num_threads().max(1);
        let blocks = m.div_ceil(MC).next_multiple_of(threads);
        let mc = m.div_ceil(blocks).next_multiple_of(T);
        let row_blocks = m.div_ceil(mc);
        let out = OutPtr(c.as_mut_ptr());
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            let panels = nc.div_ceil(T);
            let col_splits = if row_blocks >= threads { 1 } else { threads.div_ceil(row_blocks).min(panels) };
            let panels_per_split = panels.div_ceil(col_splits);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let kt = kc.div_ceil(64);
                let panel_bytes = 8 * kt * KSTEP;
                let mut pb = take_buf_stale(&BUF_B, panels * panel_bytes / 64, ZERO_LINE);
                pack_b(b, pc, kc, jc, nc, kt, bytes_mut(&mut pb), vbmi);
                let pb_ref = bytes(&pb);
                (0..row_blocks * col_splits).into_par_iter().for_each(|task| {
                    let (rb, cs) = (task / col_splits, task % col_splits);
                    let ic = rb * mc;
                    let mcb = mc.min(m - ic);
                    let p0 = cs * panels_per_split;
                    let p1 = panels.min(p0 + panels_per_split);
                    if p0 >= p1 {
                        return;
                    }
                    let mut pa = take_buf_stale(&BUF_A, mcb.div_ceil(T) * panel_bytes / 64, ZERO_LINE);
                    pack_a(a, ic, mcb, pc, kc, kt, bytes_mut(&mut pa), vbmi);
                    let pa_ref = bytes(&pa);
                    // SAFETY: AMX is usable (checked by the caller, `super::gemm_acc`).
                    let tiles = unsafe { Tiles::load() };
                    let mut acc = Acc([[0; T * T]; 8]);
                    for jp in p0..p1 {
                        let j = jp * T;
                        let nr = T.min(nc - j);
                        let bpanel = &pb_ref[jp * panel_bytes..(jp + 1) * panel_bytes];
                        for ip in 0..mcb.div_ceil(T) {
                            let i = ip * T;
                            let mr = T.min(mcb - i);
                            let apanel = &pa_ref[ip * panel_bytes..(ip + 1) * panel_bytes];
                            micro_tile(&tiles, kt, apanel, bpanel, &mut acc);
                            // SAFETY: (ic+i.., jc+j..) with mr x nr lies inside the m x n
                            // output (checked in `super::gemm_acc`) and this task is its only writer.
                            unsafe { combine(&acc, out.get().add((ic + i) * ldc + jc + j), ldc, mr, nr) };
                        }
                    }
                    drop(tiles);
                    give_buf(&BUF_A, pa);
                });
                give_buf(&BUF_B, pb);
            }
        }
    }

    /// Whether the packing routines may use AVX-512 VBMI byte permutes (every AMX CPU has
    /// them; checked anyway, with AVX-512BW).
    pub(super) fn has_vbmi() -> bool {
        std::arch::is_x86_feature_detected!("avx512vbmi") && std::arch::is_x86_feature_detected!("avx512bw")
    }

    /// Packing by byte permutes: 64 ring elements (8 zmm) become the 8 limb lines of 64
    /// bytes each in 8 `VPERMB` (each element's 8 bytes to limb-major order within its
    /// register) and an 8 x 8 transpose of 64-bit lanes (24 shuffles), against 8 shifts,
    /// 8 `VPMOVQB` and a copy per line of the scalar split (a 4-row, 16-column B block
    /// needs one more `VPERMB` per limb for the VNNI order). At 1024³ the packing was
    /// ≈ 8 % of a protocol matmul's CPU time with the scalar code.
    pub(super) mod vbmi_pack {
        use std::arch::x86_64::*;

        /// `VPERMB` index: byte `8c + l` (element c, limb l) to position `8l + c`.
        const LIMB_MAJOR: [u8; 64] = {
            let mut t = [0u8; 64];
            let mut p = 0;
            while p < 64 {
                t[p] = ((p % 8) * 8 + p / 8) as u8;
                p += 1;
            }
            t
        };

        /// After [`transpose`] of the 8 registers `2e + half` of a 4 x 16 block, byte
        /// `8(2e + c/8) + c%8` holds row e, column c: to the VNNI position `4c + e`.
        const VNNI: [u8; 64] = {
            let mut t = [0u8; 64];
            let mut q = 0;
            while q < 64 {
                let (c, e) = (q / 4, q % 4);
                t[q] = (8 * (2 * e + c / 8) + c % 8) as u8;
                q += 1;
            }
            t
        };

        /// `out[j]` lane i = `r[i]` lane j (8 x 8 transpose of 64-bit lanes).
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn transpose(r: [__m512i; 8]) -> [__m512i; 8] {
            let a0 = _mm512_unpacklo_epi64(r[0], r[1]);
            let a1 = _mm512_unpackhi_epi64(r[0], r[1]);
            let a2 = _mm512_unpacklo_epi64(r[2], r[3]);
            let a3 = _mm512_unpackhi_epi64(r[2], r[3]);
            let a4 = _mm512_unpacklo_epi64(r[4], r[5]);
            let a5 = _mm512_unpackhi_epi64(r[4], r[5]);
            let a6 = _mm512_unpacklo_epi64(r[6], r[7]);
            let a7 = _mm512_unpackhi_epi64(r[6], r[7]);
            let b0 = _mm512_shuffle_i64x2::<0x88>(a0, a2);
            let b2 = _mm512_shuffle_i64x2::<0xDD>(a0, a2);
            let b1 = _mm512_shuffle_i64x2::<0x88>(a1, a3);
            let b3 = _mm512_shuffle_i64x2::<0xDD>(a1, a3);
            let b4 = _mm512_shuffle_i64x2::<0x88>(a4, a6);
            let b6 = _mm512_shuffle_i64x2::<0xDD>(a4, a6);
            let b5 = _mm512_shuffle_i64x2::<0x88>(a5, a7);
            let b7 = _mm512_shuffle_i64x2::<0xDD>(a5, a7);
            [
                _mm512_shuffle_i64x2::<0x88>(b0, b4),
                _mm512_shuffle_i64x2::<0x88>(b1, b5),
                _mm512_shuffle_i64x2::<0x88>(b2, b6),
                _mm512_shuffle_i64x2::<0x88>(b3, b7),
                _mm512_shuffle_i64x2::<0xDD>(b0, b4),
                _mm512_shuffle_i64x2::<0xDD>(b1, b5),
                _mm512_shuffle_i64x2::<0xDD>(b2, b6),
                _mm512_shuffle_i64x2::<0xDD>(b3, b7),
            ]
        }

        /// Byte-transposes 8 registers of 8 elements each: `out[l]` = limb l of all 64.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
        fn limbs(r: [__m512i; 8]) -> [__m512i; 8] {
            // SAFETY: LIMB_MAJOR is 64 bytes.
            let idx = unsafe { _mm512_loadu_si512(LIMB_MAJOR.as_ptr().cast()) };
            transpose(r.map(|x| _mm512_permutexvar_epi8(idx, x)))
        }

        /// `dst[l·stride .. l·stride + 64]` = byte l of each of the 64 elements of `src`.
        ///
        /// # Safety
        /// The CPU has AVX-512F, BW and VBMI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
        pub(crate) unsafe fn split_64(src: &[u64], dst: &mut [u8], stride: usize) {
            assert!(src.len() >= 64 && dst.len() >= 7 * stride + 64);
            // SAFETY: 8 loads of 64 bytes within `src` (64 elements, asserted).
            let r: [__m512i; 8] =
                std::array::from_fn(|i| unsafe { _mm512_loadu_si512(src.as_ptr().add(8 * i).cast()) });
            for (l, v) in limbs(r).into_iter().enumerate() {
                // SAFETY: 64 bytes at l·stride ≤ 7·stride lie within `dst` (asserted).
                unsafe { _mm512_storeu_si512(dst.as_mut_ptr().add(l * stride).cast(), v) };
            }
        }

        /// The VNNI lines of 4 rows of 16 columns: `dst[l·stride + 4c + e]` = byte l of
        /// `rows[e][c]`.
        ///
        /// # Safety
        /// The CPU has AVX-512F, BW and VBMI.
        #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
        pub(crate) unsafe fn vnni_4x16(rows: [&[u64]; 4], dst: &mut [u8], stride: usize) {
            assert!(rows.iter().all(|r| r.len() >= 16) && dst.len() >= 7 * stride + 64);
            // SAFETY: two loads of 64 bytes within each row (16 elements, asserted).
            let r: [__m512i; 8] =
                std::array::from_fn(|i| unsafe { _mm512_loadu_si512(rows[i / 2].as_ptr().add(8 * (i % 2)).cast()) });
            // SAFETY: VNNI is 64 bytes.
            let idx = unsafe { _mm512_loadu_si512(VNNI.as_ptr().cast()) };
            for (l, v) in limbs(r).into_iter().enumerate() {
                // SAFETY: 64 bytes at l·stride ≤ 7·stride lie within `dst` (asserted).
                unsafe {
                    _mm512_storeu_si512(dst.as_mut_ptr().add(l * stride).cast(), _mm512_permutexvar_epi8(idx, v))
                };
            }
        }
    }

    /// The 8 sums `C_s` of one 32 x 32 output block, each row-major i32.
    #[repr(C, align(64))]
    pub(super) struct Acc(pub(super) [[i32; T * T]; 8]);

    /// Packs `A[ic..ic+mc, pc..pc+kc]`: per 32-row panel, per limb `l`, per k
    /// step of 64, two 16 x 64 byte tiles (rows 0-15, 16-31) of byte `l` of
    /// each entry. Writes every byte of the `mc.div_ceil(32)` panels, zeros for padding
    /// rows and k (the buffer may hold a previous block).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pack_a(
        a: View<'_>,
        ic: usize,
        mc: usize,
        pc: usize,
        kc: usize,
        kt: usize,
        dst: &mut [u8],
        vbmi: bool,
    ) {
        let panel_bytes = 8 * kt * KSTEP;
        assert!(dst.len() >= mc.div_ceil(T) * panel_bytes);
        for r in 0..mc {
            let (ip, rr) = (r / T, r % T);
            let base = ip * panel_bytes + (rr / 16) * TILE + (rr % 16) * 64;
            let mut row = [0u64; 64];
            for t in 0..kt {
                let len = 64.min(kc - t * 64);
                if vbmi && a.cs == 1 && len == 64 {
                    let s = (ic + r) * a.rs + pc + t * 64;
                    let d = base + t * KSTEP;
                    // SAFETY: VBMI checked by the caller (`has_vbmi`).
                    unsafe {
                        vbmi_pack::split_64(&a.data[s..s + 64], &mut dst[d..d + 7 * kt * KSTEP + 64], kt * KSTEP)
                    };
                    continue;
                }
                if a.cs == 1 {
                    let s = (ic + r) * a.rs + pc + t * 64;
                    row[..len].copy_from_slice(&a.data[s..s + len]);
                } else {
                    for p in 0..len {
                        row[p] = a.at(ic + r, pc + t * 64 + p);
                    }
                }
                row[len..].fill(0);
                for l in 0..8 {
                    let d = base + l * kt * KSTEP + t * KSTEP;
                    split_limb(&row, l, (&mut dst[d..d + 64]).try_into().expect("64 bytes"));
                }
            }
        }
        // Rows past `mc` in the last panel: zero lines.
        for r in mc..mc.div_ceil(T) * T {
            let (ip, rr) = (r / T, r % T);
            let base = ip * panel_bytes + (rr / 16) * TILE + (rr % 16) * 64;
            for t in 0..kt {
                for l in 0..8 {
                    let d = base + l * kt * KSTEP + t * KSTEP;
                    dst[d..d + 64].fill(0);
                }
            }
        }
    }

    /// `out[p] = byte l of row[p]`: vectorises to shifts and `vpmovqb`.
    #[inline(always)]
    fn split_limb(row: &[u64; 64], l: usize, out: &mut [u8; 64]) {
        for p in 0..64 {
            out[p] = (row[p] >> (8 * l)) as u8;
        }
    }

    /// Packs `B[pc..pc+kc, jc..jc+nc]`: per 32-column panel, per limb `l`, per
    /// k step of 64, two VNNI tiles (columns 0-15, 16-31): tile row `q`, byte
    /// `4c + e` = byte `l` of `B[4q + e][c]`. Writes every byte of the panels, zeros for
    /// padding columns and k (the buffer may hold a previous block). Parallel over panels.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pack_b(
        b: View<'_>,
        pc: usize,
        kc: usize,
        jc: usize,
        nc: usize,
        kt: usize,
        dst: &mut [u8],
        vbmi: bool,
    ) {
        let panel_bytes = 8 * kt * KSTEP;
        let pack_panel = |jp: usize, panel: &mut [u8]| {
            let j0 = jc + jp * T;
            let cols = T.min(nc - jp * T);
            // 4 source rows of 32 columns -> one 64-byte row of each of 2 tiles, 8 limbs.
            let mut quad = [[0u64; T]; 4];
            // Up to the padded depth, so the k padding is written (as zeros) too.
            for p4 in (0..kt * 64).step_by(4) {
                if vbmi && b.cs == 1 && cols == T && p4 + 4 <= kc {
                    let (t, qrow) = (p4 / 64, (p4 % 64) / 4);
                    for h in 0..2 {
                        let s = (pc + p4) * b.rs + j0 + h * 16;
                        let rows: [&[u64]; 4] = std::array::from_fn(|e| &b.data[s + e * b.rs..s + e * b.rs + 16]);
                        let d = t * KSTEP + h * TILE + qrow * 64;
                        // SAFETY: VBMI checked by the caller (`has_vbmi`).
                        unsafe { vbmi_pack::vnni_4x16(rows, &mut panel[d..d + 7 * kt * KSTEP + 64], kt * KSTEP) };
                    }
                    continue;
                }
                for (e, q) in quad.iter_mut().enumerate() {
                    let p = p4 + e;
                    if p < kc {
                        if b.cs == 1 {
                            let s = (pc + p) * b.rs + j0;
                            q[..cols].copy_from_slice(&b.data[s..s + cols]);
                        } else {
                            for c in 0..cols {
                                q[c] = b.at(pc + p, j0 + c);
                            }
                        }
                        q[cols..].fill(0);
                    } else {
                        q.fill(0);
                    }
                }
                let (t, qrow) = (p4 / 64, (p4 % 64) / 4);
                for l in 0..8 {
                    for h in 0..2 {
                        let d = l * kt * KSTEP + t * KSTEP + h * TILE + qrow * 64;
                        let out: &mut [u8; 64] = (&mut panel[d..d + 64]).try_into().expect("64 bytes");
                        for c in 0..16 {
                            for e in 0..4 {
                                out[4 * c + e] = (quad[e][h * 16 + c] >> (8 * l)) as u8;
                            }
                        }
                    }
                }
            }
        };
        if kc * nc >= 1 << 16 {
            dst.par_chunks_exact_mut(panel_bytes).enumerate().for_each(|(jp, p)| pack_panel(jp, p));
        } else {
            dst.chunks_exact_mut(panel_bytes).enumerate().for_each(|(jp, p)| pack_panel(jp, p));
        }
    }

    /// One A limb's step of [`micro_tile`]: its two row tiles (tmm4, tmm5, from `$a`) times
    /// the B tile `$held` (already loaded: into `C_{s0+1}`, tmm2/tmm3) and the B tile `$new`
    /// (loaded here from `$b`: into `C_{s0}`, tmm0/tmm1). The caller swaps the two B
    /// registers for the next limb, so each B tile is loaded once per sweep and k step.
    macro_rules! limb_step {
        ($held:literal, $new:literal, $a:expr, $b:expr) => {
            std::arch::asm!(
                "tileloadd tmm4, [{a} + {s}*1]",
                concat!("tdpbuud tmm2, tmm4, ", $held),
                concat!("tileloadd ", $new, ", [{b} + {s}*1]"),
                concat!("tdpbuud tmm0, tmm4, ", $new),
                "tileloadd tmm5, [{a} + {s}*1 + 1024]",
                concat!("tdpbuud tmm3, tmm5, ", $held),
                concat!("tdpbuud tmm1, tmm5, ", $new),
                a = in(reg) $a,
                b = in(reg) $b,
                s = in(reg) STRIDE,
                options(nostack, readonly),
            )
        };
    }

    /// The 8 sums `C_s = Σ_{i+j=s} A_i·B_j` of one 32 x 32 block over `kt`
    /// steps of 64, into `acc` (row-major i32, wrapping as `TDPBUUD` does).
    ///
    /// Four sweeps per column half `c` (16 columns), one per pair of sums
    /// `(s0, s0 + 1)`, `s0 = 0, 2, 4, 6`: tmm0/tmm1 accumulate `C_{s0}` (rows 0-15 /
    /// 16-31), tmm2/tmm3 `C_{s0+1}`, over the whole depth. Per k step the A limbs
    /// `i = 0..=s0+1` pass through tmm4/tmm5 (two row halves) and the B limbs through
    /// tmm6/tmm7 as a window of two: limb `i` needs `B_{s0+1-i}` (for `C_{s0+1}`),
    /// which limb `i - 1` loaded as its `B_{s0-(i-1)}`, and `B_{s0-i}` (for `C_{s0}`),
    /// the one new load. So `3·s0 + 6` tile loads feed `4·s0 + 6` `TDPBUUD`, 120 per
    /// 144 for the whole block and k step instead of 144 with the 2 x 2 tiles per limb
    /// pair; the loads come from L2 (the panels are 256 KiB each), and their
    /// bandwidth, not the multiplier, bounds the kernel (module doc).
    ///
    /// Safe: the tile configuration is loaded (`_tiles`) and both panels are
    /// checked to hold 8 limbs of `kt` steps, so every tile load is in bounds.
    pub(super) fn micro_tile(_tiles: &Tiles, kt: usize, pa: &[u8], pb: &[u8], acc: &mut Acc) {
        let limb = kt * KSTEP;
        assert!(pa.len() >= 8 * limb && pb.len() >= 8 * limb && kt > 0);
        const STRIDE: usize = 64;
        for s0 in (0..8usize).step_by(2) {
            for c in 0..2usize {
                // SAFETY: tiles configured (16 x 64 B each); zeroing touches no memory.
                unsafe {
                    std::arch::asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack, nomem)
                    )
                };
                for t in 0..kt {
                    // Tile (limb l, row or column half h) of this k step: l·limb + h·TILE
                    // from these; every offset used below is < 8·limb - TILE + 1 (asserted).
                    let a = pa[t * KSTEP..].as_ptr();
                    let b = pb[t * KSTEP + c * TILE..].as_ptr();
                    let at = |i: usize| a.wrapping_add(i * limb);
                    let bt = |j: usize| b.wrapping_add(j * limb);
                    // SAFETY (all asm blocks of this step): each load reads one tile of 16
                    // rows of 64 B at stride 64 from limb `i <= s0 + 1 <= 7` (A, both halves)
                    // or `j <= s0 + 1` (B, half c) of step t, inside the asserted panels.
                    unsafe {
                        std::arch::asm!(
                            "tileloadd tmm6, [{b} + {s}*1]",
                            b = in(reg) bt(s0 + 1),
                            s = in(reg) STRIDE,
                            options(nostack, readonly),
                        )
                    };
                    // Limbs (i, i + 1), each with both of its B tiles: on entry tmm6 = B_{s0+1-i},
                    // on exit tmm6 = B_{s0-1-i}, the entry value for i + 2.
                    for i in (0..s0).step_by(2) {
                        unsafe { limb_step!("tmm6", "tmm7", at(i), bt(s0 - i)) };
                        unsafe { limb_step!("tmm7", "tmm6", at(i + 1), bt(s0 - i - 1)) };
                    }
                    // Limb s0 (B_1 in tmm6, loads B_0), then s0 + 1 (B_0 only: C_{s0+1}).
                    unsafe { limb_step!("tmm6", "tmm7", at(s0), bt(0)) };
                    unsafe {
                        std::arch::asm!(
                            "tileloadd tmm4, [{a} + {s}*1]",
                            "tdpbuud tmm2, tmm4, tmm7",
                            "tileloadd tmm5, [{a} + {s}*1 + 1024]",
                            "tdpbuud tmm3, tmm5, tmm7",
                            a = in(reg) at(s0 + 1),
                            s = in(reg) STRIDE,
                            options(nostack, readonly),
                        )
                    };
                }
                // C_{s0} and C_{s0+1}, rows 0-15 and 16-31, columns 16c.. of the 32 x 32 i32
                // blocks (row stride 128 B).
                let d0 = acc.0[s0][16 * c..].as_mut_ptr() as *mut u8;
                let d1 = acc.0[s0 + 1][16 * c..].as_mut_ptr() as *mut u8;
                // SAFETY: each store writes 16 rows of 64 B at stride 128 starting at row 0
                // or 16, column 16c, inside one 32 x 32 i32 block.
                unsafe {
                    std::arch::asm!(
                        "tilestored [{d} + {s}*1], tmm0",
                        "tilestored [{d} + {s}*1 + 2048], tmm1",
                        "tilestored [{e} + {s}*1], tmm2",
                        "tilestored [{e} + {s}*1 + 2048], tmm3",
                        d = in(reg) d0,
                        e = in(reg) d1,
                        s = in(reg) 2 * STRIDE,
                        options(nostack),
                    );
                }
            }
        }
    }

    /// `C[mr x nr] += Σ_s (C_s as u32 as u64) << 8s` (wrapping), with the
    /// `s >= 4` terms summed in u32 first (only their low `64 - 8s` bits count).
    ///
    /// # Safety
    /// `c` must be valid for `mr <= 32` rows of `nr <= 32` elements with row stride `ldc`.
    pub(super) unsafe fn combine(acc: &Acc, c: *mut u64, ldc: usize, mr: usize, nr: usize) {
        #[target_feature(enable = "avx512f")]
        unsafe fn rows(acc: &Acc, c: *mut u64, ldc: usize, mr: usize, nr: usize) {
            let a = &acc.0;
            for r in 0..mr {
                // SAFETY: row r < mr of nr elements lies inside C (caller's contract).
                let out = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), nr) };
                let o = r * T;
                for (j, d) in out.iter_mut().enumerate() {
                    let x = |s: usize| a[s][o + j] as u32;
                    let lo = (x(0) as u64)
                        .wrapping_add((x(1) as u64) << 8)
                        .wrapping_add((x(2) as u64) << 16)
                        .wrapping_add((x(3) as u64) << 24);
                    let hi = x(4).wrapping_add(x(5) << 8).wrapping_add(x(6) << 16).wrapping_add(x(7) << 24);
                    *d = d.wrapping_add(lo).wrapping_add((hi as u64) << 32);
                }
            }
        }
        assert!(mr <= T && nr <= T);
        // SAFETY: AVX-512F is part of `amx_support`; C per caller.
        unsafe { rows(acc, c, ldc, mr, nr) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View<'_>, b: View<'_>, m: usize, k: usize, n: usize) -> Vec<u64> {
        let mut c = vec![0u64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0u64;
                for p in 0..k {
                    s = s.wrapping_add(a.at(i, p).wrapping_mul(b.at(p, j)));
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    fn data(len: usize, mut s: u64) -> Vec<u64> {
        s |= 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s
            })
            .collect()
    }

    /// `c += a·b` through the AMX driver itself (no small-product shortcut),
    /// row-major and column-major operands, against the naive loop.
    fn check(m: usize, k: usize, n: usize, a: &[u64], b: &[u64]) {
        let want = naive(View { data: a, rs: k, cs: 1 }, View { data: b, rs: n, cs: 1 }, m, k, n);
        let init = data(m * n, 77);
        let mut c = init.clone();
        gemm_acc(View { data: a, rs: k, cs: 1 }, View { data: b, rs: n, cs: 1 }, m, k, n, &mut c, n);
        let got: Vec<u64> = c.iter().zip(&init).map(|(x, y)| x.wrapping_sub(*y)).collect();
        assert_eq!(got, want, "amx {m}x{k}x{n}");
        let at: Vec<u64> = (0..k * m).map(|t| a[(t % m) * k + t / m]).collect();
        let bt: Vec<u64> = (0..n * k).map(|t| b[(t % k) * n + t / k]).collect();
        // Output with a row stride wider than n.
        let ldc = n + 3;
        let mut c2 = vec![0u64; m * ldc];
        gemm_acc(View { data: &at, rs: 1, cs: m }, View { data: &bt, rs: 1, cs: k }, m, k, n, &mut c2, ldc);
        for i in 0..m {
            assert_eq!(&c2[i * ldc..i * ldc + n], &want[i * n..(i + 1) * n], "amx {m}x{k}x{n} strided, row {i}");
            assert!(c2[i * ldc + n..(i + 1) * ldc].iter().all(|&x| x == 0), "wrote past n");
        }
    }

    fn amx_or_skip() -> bool {
        match amx_support() {
            Ok(()) => true,
            Err(why) => {
                eprintln!("AMX kernel not run on this machine: {why}");
                false
            }
        }
    }

    #[test]
    fn amx_odd_shapes_random_ones_zero() {
        if !amx_or_skip() {
            return;
        }
        let dims = [1usize, 3, 15, 17, 31, 33, 63, 65, 127];
        for &m in &dims {
            for &k in &dims {
                for &n in &dims {
                    if (m * k * n) % 3 != 0 && m * k * n > 5000 {
                        continue; // a third of the larger shapes keeps the test short
                    }
                    let a = data(m * k, (m * 1000 + k) as u64);
                    let b = data(k * n, (k * 1000 + n) as u64);
                    check(m, k, n, &a, &b);
                }
            }
        }
        for &(m, k, n) in &[(33, 65, 17), (64, 64, 64), (5, 300, 70), (130, 257, 200)] {
            check(m, k, n, &vec![u64::MAX; m * k], &vec![u64::MAX; k * n]);
            check(m, k, n, &vec![0; m * k], &data(k * n, 3));
            let ff: Vec<u64> = data(m * k, 9).iter().map(|x| x | 0x8080_8080_8080_8080).collect();
            check(m, k, n, &ff, &data(k * n, 4));
        }
    }

    /// The VBMI packing writes exactly the bytes of the scalar packing, for full and
    /// partial blocks (which take the scalar path), row- and column-major operands.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vbmi_packing_matches_scalar() {
        use super::imp::{has_vbmi, pack_a, pack_b};
        if !has_vbmi() {
            eprintln!("VBMI packing not run on this machine: no AVX-512 VBMI");
            return;
        }
        for &(rows, depth, cols) in &[(128usize, 1024usize, 1024usize), (37, 200, 45), (32, 64, 32), (5, 67, 96)] {
            let a = data(rows * depth, 11);
            let b = data(depth * cols, 12);
            let kt = depth.div_ceil(64);
            let panel_bytes = 8 * kt * KSTEP;
            let views = [
                (View { data: &a, rs: depth, cs: 1 }, View { data: &b, rs: cols, cs: 1 }),
                (View { data: &a, rs: 1, cs: rows }, View { data: &b, rs: 1, cs: depth }),
            ];
            for (va, vb) in views {
                // Buffers start with stale bytes: the packers must write every one.
                let pack = |vbmi: bool, stale: u8| {
                    let mut pa = vec![stale; rows.div_ceil(T) * panel_bytes];
                    let mut pb = vec![stale; cols.div_ceil(T) * panel_bytes];
                    pack_a(va, 0, rows, 0, depth, kt, &mut pa, vbmi);
                    pack_b(vb, 0, depth, 0, cols, kt, &mut pb, vbmi);
                    (pa, pb)
                };
                let want = pack(false, 0);
                assert!(pack(true, 0xA5) == want, "{rows}x{depth}x{cols}, cs {} / {}", va.cs, vb.cs);
                assert!(pack(false, 0x5A) == want, "{rows}x{depth}x{cols} scalar, cs {} / {}", va.cs, vb.cs);
            }
        }
    }

    /// Depth past the per-block exactness bound's neighbourhood: all-ones limbs
    /// (255 · 255 per product) over k = 20_000 for a thin product.
    #[test]
    fn amx_deep_k_all_ones() {
        if !amx_or_skip() {
            return;
        }
        let (m, k, n) = (3, 20_000, 5);
        check(m, k, n, &vec![u64::MAX; m * k], &vec![u64::MAX; k * n]);
        check(m, k, n, &data(m * k, 5), &data(k * n, 6));
    }

    /// Runs on rayon worker threads: the permission is process-wide, the tile
    /// configuration is loaded per task.
    #[test]
    fn amx_two_thread_pool() {
        if !amx_or_skip() {
            return;
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        let (m, k, n) = (200, 300, 2100);
        let a = data(m * k, 7);
        let b = data(k * n, 8);
        pool.install(|| check(m, k, n, &a, &b));
        let (m, k, n) = (2, 100, 400); // fewer row blocks than threads: column split
        pool.install(|| check(m, k, n, &data(m * k, 1), &data(k * n, 2)));
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod kernel_tests {
    use super::imp::*;
    use super::*;

    /// The previous micro-kernel: per sum `s`, the 2 x 2 tiles of every limb pair
    /// (4 tile loads per 4 `TDPBUUD`). The reference for the sliding-window kernel and
    /// the baseline of `micro_speed`.
    pub(super) fn micro_tile_2x2(_tiles: &Tiles, kt: usize, pa: &[u8], pb: &[u8], acc: &mut Acc) {
        let limb = kt * KSTEP;
        assert!(pa.len() >= 8 * limb && pb.len() >= 8 * limb && kt > 0);
        for s in 0..8usize {
            // SAFETY: tiles configured; zeroing touches no memory.
            unsafe { std::arch::asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3") };
            for i in s.saturating_sub(7)..=s.min(7) {
                let mut ap = pa[i * limb..].as_ptr();
                let mut bp = pb[(s - i) * limb..].as_ptr();
                for _ in 0..kt {
                    // SAFETY: 2 tiles of A limb i and of B limb s - i at this step (asserted lengths).
                    unsafe {
                        std::arch::asm!(
                            "tileloadd tmm4, [{a} + {s}*1]",
                            "tileloadd tmm6, [{b} + {s}*1]",
                            "tdpbuud tmm0, tmm4, tmm6",
                            "tileloadd tmm7, [{b} + {s}*1 + 1024]",
                            "tdpbuud tmm1, tmm4, tmm7",
                            "tileloadd tmm5, [{a} + {s}*1 + 1024]",
                            "tdpbuud tmm2, tmm5, tmm6",
                            "tdpbuud tmm3, tmm5, tmm7",
                            a = in(reg) ap,
                            b = in(reg) bp,
                            s = in(reg) 64usize,
                            options(nostack, readonly),
                        );
                        ap = ap.add(KSTEP);
                        bp = bp.add(KSTEP);
                    }
                }
            }
            let dst = acc.0[s].as_mut_ptr() as *mut u8;
            // SAFETY: 4 quadrants of the 32 x 32 i32 block (row stride 128 B).
            unsafe {
                std::arch::asm!(
                    "tilestored [{d} + {s}*1], tmm0",
                    "tilestored [{d} + {s}*1 + 64], tmm1",
                    "tilestored [{d} + {s}*1 + 2048], tmm2",
                    "tilestored [{d} + {s}*1 + 2112], tmm3",
                    d = in(reg) dst,
                    s = in(reg) 128usize,
                    options(nostack),
                );
            }
        }
    }

    pub(super) fn panel(kt: usize, seed: u64, ones: bool) -> Vec<Line> {
        let mut x = seed | 1;
        (0..8 * kt * KSTEP / 64)
            .map(|_| {
                Line(std::array::from_fn(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if ones {
                        0xFF
                    } else {
                        x as u8
                    }
                }))
            })
            .collect()
    }

    /// Every sum of the sliding-window kernel equals the 2 x 2 kernel's, bit for bit, for
    /// depths of 1 to 17 steps and 32 (each sweep's first and last limb pair, one step and
    /// many), random bytes and all-0xFF limbs (the largest products), and stale `acc`.
    #[test]
    fn window_kernel_matches_2x2() {
        if amx_support().is_err() {
            eprintln!("AMX micro-kernel not run on this machine: {}", amx_support().unwrap_err());
            return;
        }
        // SAFETY: AMX is usable (checked above).
        let tiles = unsafe { Tiles::load() };
        for kt in (1..=17).chain([32]) {
            for (seed, ones) in [(1u64, false), (2, false), (3, true)] {
                let (pa, pb) = (panel(kt, seed, ones), panel(kt, seed + 100, ones && seed == 3));
                let mut want = Acc([[0; T * T]; 8]);
                micro_tile_2x2(&tiles, kt, bytes(&pa), bytes(&pb), &mut want);
                let mut got = Acc([[0x5A5A_5A5A; T * T]; 8]);
                micro_tile(&tiles, kt, bytes(&pa), bytes(&pb), &mut got);
                for s in 0..8 {
                    assert!(got.0[s] == want.0[s], "kt {kt}, seed {seed}, ones {ones}: C_{s} differs");
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod microbench {
    use super::imp::*;
    use super::kernel_tests::{micro_tile_2x2, panel};
    use super::*;

    /// `cargo test --release -p syft-mpc-ring --lib micro_speed -- --ignored --nocapture`:
    /// ns per `TDPBUUD` of the 2 x 2 and the sliding-window kernels on panels in L2 (4 A
    /// panels and one B panel of 256 KiB, as in the GEMM at 1024³), and of `TDPBUUD` on 4
    /// accumulators with no loads (the multiplier's bound), alternating, 30 rounds.
    #[test]
    #[ignore]
    fn micro_speed() {
        amx_support().unwrap();
        let kt = 16;
        let pas: Vec<Vec<Line>> = (0..4).map(|p| panel(kt, 7 + p, false)).collect();
        let pb = panel(kt, 99, false);
        // SAFETY: AMX is usable (unwrapped above).
        let tiles = unsafe { Tiles::load() };
        let mut acc = Acc([[0; T * T]; 8]);
        let mut mean = [vec![], vec![], vec![]];
        let reps = 100;
        let tdp = (reps * 36 * 4 * kt) as f64;
        for _ in 0..30 {
            for (v, m) in mean.iter_mut().enumerate() {
                let t0 = std::time::Instant::now();
                for r in 0..reps {
                    let pa = bytes(&pas[r % 4]);
                    match v {
                        0 => micro_tile_2x2(&tiles, kt, pa, bytes(&pb), &mut acc),
                        1 => micro_tile(&tiles, kt, pa, bytes(&pb), &mut acc),
                        _ => {
                            for _ in 0..36 * kt {
                                // SAFETY: tiles configured; register operands only.
                                unsafe {
                                    std::arch::asm!(
                                        "tdpbuud tmm0, tmm4, tmm6",
                                        "tdpbuud tmm1, tmm4, tmm7",
                                        "tdpbuud tmm2, tmm5, tmm6",
                                        "tdpbuud tmm3, tmm5, tmm7",
                                        options(nostack, nomem)
                                    )
                                };
                            }
                        }
                    }
                }
                m.push(t0.elapsed().as_secs_f64() / tdp * 1e9);
            }
        }
        for (name, mut m) in ["2x2 (previous)", "sliding window", "TDPBUUD alone"].into_iter().zip(mean) {
            m.sort_by(f64::total_cmp);
            eprintln!("{name}: ns per TDPBUUD, min {:.2}, median {:.2}", m[0], m[m.len() / 2]);
        }
        let mut c = vec![0u64; T * T];
        let t0 = std::time::Instant::now();
        for _ in 0..10_000 {
            // SAFETY: c is 32 x 32 with row stride 32.
            unsafe { combine(&acc, c.as_mut_ptr(), T, T, T) };
        }
        eprintln!("combine: {:.0} ns per 32 x 32 block", t0.elapsed().as_secs_f64() / 10_000.0 * 1e9);
        drop(tiles);
    }
}
