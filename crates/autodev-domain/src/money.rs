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

/// The calendar month (UTC) a Unix time in milliseconds falls in, as `YYYY-MM`: the key of
/// monthly budgets.
///
/// Written out rather than taken from a date crate: it is the one calendar computation the
/// domain needs (days → civil date, H. Hinnant's `civil_from_days`), and the domain has no
/// dependencies beyond serde.
pub fn month_of(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_of(0), "1970-01");
        // 2026-11-30T23:59:59.999Z and the millisecond after.
        assert_eq!(month_of(1_796_083_199_999), "2026-11");
        assert_eq!(month_of(1_796_083_200_000), "2026-12");
        // 2024-02-29T12:00:00Z (a leap day), 2000-03-01T00:00:00Z.
        assert_eq!(month_of(1_709_208_000_000), "2024-02");
        assert_eq!(month_of(951_868_800_000), "2000-03");
        assert_eq!(month_of(-1), "1969-12");
    }

    #[test]
    fn cost_is_exact_per_million() {
        // 1,000 input tokens at $3/M = $0.003 = 3,000 micro-dollars.
        assert_eq!(MicroUsd::for_tokens(1_000, 3.0), MicroUsd(3_000));
        assert_eq!(MicroUsd(1_234_567).to_string(), "$1.2346");
        assert_eq!([MicroUsd(1), MicroUsd(2)].into_iter().sum::<MicroUsd>(), MicroUsd(3));
    }
}
