//! The median over rounds of a measurement, and how far the rounds spread around it.
//!
//! On a noisy machine one run of a scenario can be off by a quarter; rounds that alternate the
//! scenarios in time and a median per scenario make the ratios between scenarios dependable.

use serde::Serialize;

/// Which round of several has the median rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Median {
    /// Index (from 0) into the rounds of the round whose rate is the median; with an even number of
    /// rounds, the slower of the two middle ones. Its latencies stand for the rounds.
    pub round_index: usize,
    /// Requests per second of that round.
    pub rps: f64,
    /// (max − min) / median of the rates, in percent; `None` of a single round, or when the
    /// median is 0.
    pub spread_pct: Option<f64>,
}

impl Median {
    /// The median of `rates`, one per round; `None` without any.
    pub fn of(rates: &[f64]) -> Option<Self> {
        let mut order: Vec<usize> = (0..rates.len()).collect();
        order.sort_by(|&a, &b| rates[a].total_cmp(&rates[b]));
        let round_index = *order.get((order.len().checked_sub(1)?) / 2)?;
        let rps = rates[round_index];
        let min = rates[*order.first()?];
        let max = rates[*order.last()?];
        Some(Self {
            round_index,
            rps,
            spread_pct: (rates.len() > 1 && rps > 0.0).then(|| (max - min) / rps * 100.0),
        })
    }
}

/// The results of one scenario, one per round, and which of them has the median rate.
#[derive(Debug, Clone, Serialize)]
pub struct Rounds<R> {
    /// In the order they were measured.
    pub rounds: Vec<R>,
    pub median: Median,
}

impl<R> Rounds<R> {
    /// Sums up `rounds` by the rate that `rate` reads from each; `None` without any round.
    pub fn of(rounds: Vec<R>, rate: impl Fn(&R) -> f64) -> Option<Self> {
        let rates: Vec<f64> = rounds.iter().map(rate).collect();
        Some(Self {
            median: Median::of(&rates)?,
            rounds,
        })
    }

    /// The round whose rate is the median; its other figures (latencies) stand for the rounds.
    pub fn median_round(&self) -> &R {
        &self.rounds[self.median.round_index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_keep_the_median_one() {
        let rounds = Rounds::of(vec![("a", 3.0), ("b", 1.0), ("c", 2.0)], |&(_, rate)| rate).unwrap();
        assert_eq!(rounds.median_round().0, "c");
        assert_eq!(rounds.median.rps, 2.0);
        assert_eq!(rounds.rounds.len(), 3);
        assert!(Rounds::of(Vec::<f64>::new(), |&rate| rate).is_none());
    }

    #[test]
    fn odd_rounds_take_the_middle_one() {
        let median = Median::of(&[120.0, 80.0, 100.0]).unwrap();
        assert_eq!(median.round_index, 2);
        assert_eq!(median.rps, 100.0);
        assert_eq!(median.spread_pct, Some(40.0));
    }

    #[test]
    fn even_rounds_take_the_slower_middle_one() {
        let median = Median::of(&[50.0, 200.0, 100.0, 150.0]).unwrap();
        assert_eq!(median.round_index, 2);
        assert_eq!(median.rps, 100.0);
        assert_eq!(median.spread_pct, Some(150.0));
    }

    #[test]
    fn one_round_has_no_spread() {
        let median = Median::of(&[42.0]).unwrap();
        assert_eq!(median.round_index, 0);
        assert_eq!(median.rps, 42.0);
        assert_eq!(median.spread_pct, None);
    }

    #[test]
    fn no_rounds_and_zero_rates() {
        assert_eq!(Median::of(&[]), None);
        assert_eq!(Median::of(&[0.0, 0.0, 5.0]).unwrap().spread_pct, None);
    }
}
