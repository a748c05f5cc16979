//! Medians and spreads of repeated measurements.

use serde::Serialize;
use std::time::Duration;

/// Summary of repeated samples (in the unit they were given in).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
}

/// Nearest-rank percentile of sorted samples (`q` in 0..=1).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

impl Summary {
    pub fn of(samples: &[f64]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Summary {
            n,
            median,
            p10: percentile(&sorted, 0.10),
            p90: percentile(&sorted, 0.90),
            min: sorted[0],
            max: sorted[n - 1],
        }
    }

    pub fn of_durations_ms(samples: &[Duration]) -> Summary {
        Summary::of(
            &samples
                .iter()
                .map(|d| d.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        )
    }

    pub fn of_durations_us(samples: &[Duration]) -> Summary {
        Summary::of(
            &samples
                .iter()
                .map(|d| d.as_secs_f64() * 1e6)
                .collect::<Vec<_>>(),
        )
    }

    /// `median (min–max)` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            self.median, self.min, self.max
        )
    }

    /// `median (p10–p90)` with `digits` decimals, for large sample counts.
    pub fn show_p(&self, digits: usize) -> String {
        format!(
            "{:.digits$} (p10 {:.digits$}, p90 {:.digits$})",
            self.median, self.p10, self.p90
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.median, 2.5);
    }
}
