//! The one percentile definition of syncbridge's figures (latch latency, release lead time,
//! benchmark results): *nearest rank*. The `p`th percentile of `n` sorted samples is the
//! sample at 1-based rank `ceil(p/100 * n)`: the smallest sample that at least `p`% of the
//! samples do not exceed. It is always one of the samples (no interpolation), so p99 of
//! fewer than 100 samples is the maximum, and p50 of an even count is the lower middle.
//!
//! ```
//! use syncbridge_bridge::percentile::nearest_rank;
//! let sorted = [10, 20, 30, 40, 1000];
//! assert_eq!(nearest_rank(&sorted, 50), Some(30));
//! assert_eq!(nearest_rank(&sorted, 99), Some(1000));
//! assert_eq!(nearest_rank::<u64>(&[], 50), None);
//! ```

/// The `p`th percentile (in percent; above 100 counts as 100, 0 gives the minimum) of
/// `sorted`, which must be in ascending order, by nearest rank. `None` when it is empty.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: u32) -> Option<T> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (u128::from(p.min(100)) * n as u128).div_ceil(100);
    // `rank` is at most `n` (p <= 100), so the conversion cannot fail.
    let rank = usize::try_from(rank).unwrap_or(n).clamp(1, n);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_percentile() {
        assert_eq!(nearest_rank::<u64>(&[], 0), None);
        assert_eq!(nearest_rank::<u64>(&[], 50), None);
        assert_eq!(nearest_rank::<f64>(&[], 99), None);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        for p in [0, 1, 50, 99, 100, 1000] {
            assert_eq!(nearest_rank(&[7], p), Some(7), "p{p}");
        }
    }

    #[test]
    fn p50_and_p99_of_one_to_hundred() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 50), Some(50));
        assert_eq!(nearest_rank(&v, 99), Some(99));
        assert_eq!(nearest_rank(&v, 100), Some(100));
        assert_eq!(nearest_rank(&v, 1), Some(1));
        assert_eq!(nearest_rank(&v, 0), Some(1));
        assert_eq!(nearest_rank(&v, 250), Some(100));
    }

    #[test]
    fn small_sets_round_the_rank_up() {
        // Two samples: p50 is the lower one (rank 1), p99 the upper (rank ceil(1.98) = 2).
        assert_eq!(nearest_rank(&[1, 2], 50), Some(1));
        assert_eq!(nearest_rank(&[1, 2], 51), Some(2));
        assert_eq!(nearest_rank(&[1, 2], 99), Some(2));
        // Under 100 samples p99 is the maximum; 101 samples: rank ceil(99.99) = 100.
        let v: Vec<i64> = (0..10).collect();
        assert_eq!(nearest_rank(&v, 99), Some(9));
        let v: Vec<i64> = (1..=101).collect();
        assert_eq!(nearest_rank(&v, 99), Some(100));
        assert_eq!(nearest_rank(&v, 50), Some(51));
        // Odd count: the middle sample.
        assert_eq!(nearest_rank(&[3.0, 1.0e9, 2.0e9], 50), Some(1.0e9));
    }
}
