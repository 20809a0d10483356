//! Pieces shared by the SIGKILL crash tests of every crate: a replayable random schedule and
//! the knobs every such test reads from the environment.

use std::time::SystemTime;

use super::env_number;

/// A small xorshift generator. Crash tests print their seed so a failing kill schedule can be
/// replayed with `LIVERESULTS_CRASH_SEED`.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value; zero is remapped, as xorshift would stick at zero).
    pub fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }

    /// A number in `0..n` (`n` must be positive).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Kill rounds: `LIVERESULTS_CRASH_ROUNDS`, or `default`.
pub fn crash_rounds(default: u32) -> u32 {
    env_number("LIVERESULTS_CRASH_ROUNDS", default)
}

/// The schedule's seed: `LIVERESULTS_CRASH_SEED`, or one from the clock.
pub fn crash_seed() -> u64 {
    let from_clock = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    env_number("LIVERESULTS_CRASH_SEED", from_clock)
}
