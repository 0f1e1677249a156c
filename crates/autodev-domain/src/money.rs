//! Money as integer micro-dollars, so sums are exact and storable as an integer.
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MicroUsd(pub i64);

impl MicroUsd {
    /// Cost of `tokens` at `usd_per_million` dollars per million tokens, rounded to the
    /// nearest micro-dollar.
    pub fn for_tokens(tokens: u64, usd_per_million: f64) -> Self {
        Self((tokens as f64 * usd_per_million).round() as i64)
    }

    pub fn as_usd(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }
}

impl Add for MicroUsd {
    type Output = MicroUsd;
    fn add(self, rhs: Self) -> Self {
        MicroUsd(self.0 + rhs.0)
    }
}

impl AddAssign for MicroUsd {
    fn add_assign(&mut self, rhs: Self) {
        self.0 += rhs.0;
    }
}

impl Sum for MicroUsd {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(MicroUsd(0), Add::add)
    }
}

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.4}", self.as_usd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_per_million() {
        // 1,000 input tokens at $3/M = $0.003 = 3,000 micro-dollars.
        assert_eq!(MicroUsd::for_tokens(1_000, 3.0), MicroUsd(3_000));
        assert_eq!(MicroUsd(1_234_567).to_string(), "$1.2346");
        assert_eq!([MicroUsd(1), MicroUsd(2)].into_iter().sum::<MicroUsd>(), MicroUsd(3));
    }
}
