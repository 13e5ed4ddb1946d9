//! The run's size and seed, from environment variables (documented in the header of
//! `differential.rs`).

/// The fixed seed of the normal `cargo test` run.
pub const DEFAULT_SEED: u64 = 20_261_207;

pub struct Settings {
    /// `JITGATE_DIFF_SEED`: seeds the generator (decimal, or hex with `0x`).
    pub seed: u64,
    /// `JITGATE_DIFF_SEQUENCES`: sequences sent through jitgate.
    pub sequences: usize,
    /// `JITGATE_DIFF_PER_CONNECTION`: sequences per connection before a fresh one.
    pub per_connection: usize,
    /// `JITGATE_DIFF_FINDINGS`: distinct minimal failures to collect before failing.
    pub findings: usize,
    /// `JITGATE_DIFF_DIRECT_SEQUENCES`: sequences sent straight to PostgreSQL to check
    /// the test's own reading of answers and of the server log.
    pub direct_sequences: usize,
}

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        Err(_) => default,
    }
}

fn seed() -> u64 {
    match std::env::var("JITGATE_DIFF_SEED") {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            };
            parsed.unwrap_or_else(|| panic!("JITGATE_DIFF_SEED={v:?} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

impl Settings {
    pub fn from_env() -> Settings {
        Settings {
            seed: seed(),
            sequences: var("JITGATE_DIFF_SEQUENCES", 2000),
            per_connection: var("JITGATE_DIFF_PER_CONNECTION", 25usize).max(1),
            findings: var("JITGATE_DIFF_FINDINGS", 1usize).max(1),
            direct_sequences: var("JITGATE_DIFF_DIRECT_SEQUENCES", 300),
        }
    }
}
