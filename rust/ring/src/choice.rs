//! One rule for this crate's run-time choices, the GEMM kernel ([`crate::gemm`]) and the
//! element-wise vector level ([`crate::simd`]): the best option this CPU and OS can run,
//! unless an environment variable names another one they can run; a process-wide override
//! for tests and benchmarks; and a sentence saying why, for `syft-mpc info`.

use std::fmt::Display;
use std::sync::atomic::{AtomicU8, Ordering};

/// What runs, what could run here (best first), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice<T> {
    /// The option in use.
    pub chosen: T,
    /// The options this CPU and OS can run, best first.
    pub available: Vec<T>,
    /// Why `chosen` (best available, the environment variable, or an override), and why
    /// the better options are unavailable.
    pub reason: String,
}

/// Chooses from `all` (best first; the last is always supported): the best option whose
/// `support` is `Ok`, or the one the environment variable `env` names if it is supported.
/// An unknown or unsupported name falls back to the best, and the reason says so.
pub(crate) fn from_env<T: Copy + PartialEq + Display>(
    env: &str,
    all: &[T],
    name: fn(T) -> &'static str,
    support: fn(T) -> Result<(), String>,
) -> Choice<T> {
    let available: Vec<T> = all.iter().copied().filter(|&o| support(o).is_ok()).collect();
    let best = available[0];
    let mut why: Vec<String> = all
        .iter()
        .take_while(|&&o| o != best)
        .map(|&o| format!("{o} unavailable: {}", support(o).err().unwrap_or_default()))
        .collect();
    let chosen = match std::env::var(env) {
        Err(_) => {
            why.insert(0, format!("best available ({env} not set)"));
            best
        }
        Ok(v) => {
            let want = v.trim().to_ascii_lowercase();
            match all.iter().copied().find(|&o| name(o) == want) {
                Some(o) if available.contains(&o) => {
                    why.insert(0, format!("forced by {env}={v}"));
                    o
                }
                Some(o) => {
                    why.insert(0, format!("{env}={v} asks for {o}, unavailable here; fell back to {best}"));
                    best
                }
                None => {
                    why.insert(0, format!("{env}={v} is not one of the names; fell back to {best}"));
                    best
                }
            }
        }
    };
    Choice { chosen, available, reason: why.join("; ") }
}

impl<T: Copy + PartialEq + Display> Choice<T> {
    /// This choice with `now` in effect, when an [`Override`] (set by `by`) replaced it.
    pub(crate) fn with(mut self, now: T, by: &str) -> Choice<T> {
        if now != self.chosen {
            self.reason = format!("forced by {by}({now}) (default would be {}: {})", self.chosen, self.reason);
            self.chosen = now;
        }
        self
    }
}

/// A process-wide override of a choice among `all` (0: none; else 1 + the index).
pub(crate) struct Override(AtomicU8);

impl Override {
    pub(crate) const fn new() -> Override {
        Override(AtomicU8::new(0))
    }

    /// The option in force, if any.
    pub(crate) fn get<T: Copy>(&self, all: &[T]) -> Option<T> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            i => Some(all[usize::from(i) - 1]),
        }
    }

    /// Sets (`Some`) or clears (`None`) the override; `option` must be one of `all`.
    pub(crate) fn set<T: PartialEq>(&self, all: &[T], option: Option<T>) {
        let code = option.map_or(0, |o| 1 + all.iter().position(|x| *x == o).expect("one of the options") as u8);
        self.0.store(code, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Opt {
        Fast,
        Mid,
        Slow,
    }
    const ALL: [Opt; 3] = [Opt::Fast, Opt::Mid, Opt::Slow];

    impl Display for Opt {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(name(*self))
        }
    }
    fn name(o: Opt) -> &'static str {
        match o {
            Opt::Fast => "fast",
            Opt::Mid => "mid",
            Opt::Slow => "slow",
        }
    }
    fn no_fast(o: Opt) -> Result<(), String> {
        if o == Opt::Fast {
            Err("needs a faster CPU".into())
        } else {
            Ok(())
        }
    }

    #[test]
    fn best_available_and_why_not_better() {
        let c = from_env("SYFT_MPC_CHOICE_TEST_UNSET", &ALL, name, no_fast);
        assert_eq!((c.chosen, c.available), (Opt::Mid, vec![Opt::Mid, Opt::Slow]));
        assert_eq!(
            c.reason,
            "best available (SYFT_MPC_CHOICE_TEST_UNSET not set); fast unavailable: needs a faster CPU"
        );
    }

    #[test]
    fn the_environment_names_one_or_falls_back() {
        for (value, chosen, says) in [
            ("slow", Opt::Slow, "forced by SYFT_MPC_CHOICE_TEST_SET=slow"),
            (" MID ", Opt::Mid, "forced by SYFT_MPC_CHOICE_TEST_SET= MID "),
            ("fast", Opt::Mid, "asks for fast, unavailable here; fell back to mid"),
            ("warp", Opt::Mid, "is not one of the names; fell back to mid"),
        ] {
            std::env::set_var("SYFT_MPC_CHOICE_TEST_SET", value);
            let c = from_env("SYFT_MPC_CHOICE_TEST_SET", &ALL, name, no_fast);
            assert_eq!(c.chosen, chosen, "{value}");
            assert!(c.reason.contains(says), "{value}: {}", c.reason);
        }
        std::env::remove_var("SYFT_MPC_CHOICE_TEST_SET");
    }

    #[test]
    fn an_override_replaces_the_choice_and_says_so() {
        let o = Override::new();
        assert_eq!(o.get(&ALL), None);
        o.set(&ALL, Some(Opt::Slow));
        assert_eq!(o.get(&ALL), Some(Opt::Slow));
        let c = from_env("SYFT_MPC_CHOICE_TEST_UNSET", &ALL, name, no_fast).with(Opt::Slow, "force");
        assert_eq!(c.chosen, Opt::Slow);
        assert!(c.reason.starts_with("forced by force(slow) (default would be mid: best available"), "{}", c.reason);
        o.set(&ALL, None);
        assert_eq!(o.get(&ALL), None);
    }
}
