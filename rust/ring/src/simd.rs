//! Run-time choice of the vector width for the element-wise passes (ring add,
//! sub, mul, scale, the protocols' fused passes through
//! [`crate::kernels::for_chunks_mut`]).
//!
//! The passes are plain Rust loops compiled several times, once per level with
//! `#[target_feature]`, and the level is picked at run time, so the wheel needs
//! no `-C target-cpu`: AVX-512 (F, DQ, BW, VL: 512-bit lanes and `vpmullq` for
//! the u64 product) where the CPU and OS have it, else AVX2, else the baseline
//! build. `SYFT_MPC_SIMD=avx512|avx2|portable` forces one (read once; a level
//! the CPU lacks falls back to the best available), and [`force`] overrides it
//! for tests and benchmarks: the rule of [`crate::choice`], which the GEMM
//! kernel's choice follows too; [`info`] says what was chosen and why. Every
//! level computes the same wrapping u64 arithmetic, so results are bit-for-bit
//! equal.

use crate::choice::{self, Choice, Override};
use std::sync::OnceLock;

/// A vector level of the element-wise passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Simd {
    /// AVX-512 F + DQ + BW + VL.
    Avx512,
    /// AVX2.
    Avx2,
    /// The baseline target (SSE2 on x86-64).
    Portable,
}

/// Environment variable that forces a level: `avx512`, `avx2` or `portable`.
pub const SIMD_ENV: &str = "SYFT_MPC_SIMD";

impl Simd {
    /// Every level, best first.
    pub const ALL: [Simd; 3] = [Simd::Avx512, Simd::Avx2, Simd::Portable];

    /// The name used by `SYFT_MPC_SIMD`.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2",
            Simd::Portable => "portable",
        }
    }

    /// Whether this CPU (and OS) can run the level.
    pub fn supported(self) -> bool {
        self.support().is_ok()
    }

    /// `Ok` if this CPU (and OS) can run the level, else what it lacks.
    pub fn support(self) -> Result<(), String> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let ok = match self {
                Simd::Avx512 => has!("avx512f") && has!("avx512dq") && has!("avx512bw") && has!("avx512vl"),
                Simd::Avx2 => has!("avx2"),
                Simd::Portable => true,
            };
            match (ok, self) {
                (true, _) => Ok(()),
                (false, Simd::Avx512) => Err("needs AVX-512 F, DQ, BW and VL".into()),
                (false, _) => Err("needs AVX2".into()),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            if self == Simd::Portable {
                Ok(())
            } else {
                Err("not an x86-64 CPU".into())
            }
        }
    }
}

impl std::fmt::Display for Simd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The levels this CPU and OS can run, best first.
pub fn available() -> Vec<Simd> {
    Simd::ALL.into_iter().filter(|s| s.supported()).collect()
}

/// The choice made at first use: best available, or what `SYFT_MPC_SIMD` asks for.
fn default_choice() -> &'static Choice<Simd> {
    static CHOICE: OnceLock<Choice<Simd>> = OnceLock::new();
    CHOICE.get_or_init(|| choice::from_env(SIMD_ENV, &Simd::ALL, Simd::name, Simd::support))
}

static FORCED: Override = Override::new();

/// The level the element-wise passes use now.
pub fn level() -> Simd {
    FORCED.get(&Simd::ALL).unwrap_or(default_choice().chosen)
}

/// Which level the element-wise passes use, which this CPU and OS can run, and why.
pub fn info() -> Choice<Simd> {
    default_choice().clone().with(level(), "simd::force")
}

/// Overrides the level for the whole process (tests and benchmarks); `None`
/// restores the default. Errors, changing nothing, if the CPU lacks it.
pub fn force(level: Option<Simd>) -> Result<(), String> {
    if let Some(s) = level {
        s.support().map_err(|why| format!("SIMD level {s} unavailable on this CPU: {why}"))?;
    }
    FORCED.set(&Simd::ALL, level);
    Ok(())
}

/// Runs `f` compiled for `level` (`f` is inlined into a function built with
/// that level's target features, so its loops vectorise to that width).
/// `level` must be supported; an unsupported one runs the baseline build.
#[inline(always)]
pub fn run_at<R>(level: Simd, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx2")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match level {
            // SAFETY: the level's features were detected at run time (`supported`).
            Simd::Avx512 if level.supported() => return unsafe { avx512(f) },
            // SAFETY: as above.
            Simd::Avx2 if level.supported() => return unsafe { avx2(f) },
            _ => {}
        }
    }
    let _ = level;
    f()
}

/// [`run_at`] the current [`level`], but at most AVX2: for passes that
/// measured no faster at 512 bits (ring add and sub are bound by L2 and
/// memory bandwidth, not by the vector width).
#[inline(always)]
pub fn run_narrow<R>(f: impl FnOnce() -> R) -> R {
    let l = level();
    run_at(if l == Simd::Avx512 { Simd::Avx2 } else { l }, f)
}

/// [`run_at`] the current [`level`].
#[inline(always)]
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    run_at(level(), f)
}
