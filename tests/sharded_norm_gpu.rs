//! A norm over a gradient set split in two (as two ranks hold it), finished from the
//! combined partials, against the CPU twin of the whole set: plain values, values of 1e25 on
//! one side only (the true norm is finite), and a NaN on one side (both sides skip).

mod common;

use common::sharded::{check_finish, Case, RankClip, RANKS};
use gradguard::{Collective, NormPartials, Solo};

#[test]
fn a_norm_split_over_ranks_equals_the_whole_sets_norm() {
    for case in [Case::Plain, Case::Huge, Case::Nan] {
        let ranks: Vec<RankClip> = (0..RANKS).map(|r| RankClip::measure(r, case)).collect();
        let parts: Vec<NormPartials> = ranks.iter().map(RankClip::partials).collect();
        let global = NormPartials::combine(&parts);
        for rank in &ranks {
            let (written, device, clipped) = rank.finish(&global);
            check_finish(rank.rank, case, &written, &device, &clipped);
        }
        if case == Case::Huge {
            assert!(ranks[1].local.norm.is_finite() && ranks[1].local.norm > 1e25, "rank 1's own norm is huge and finite");
        }
    }
}

#[test]
fn partials_combine_in_a_fixed_order_with_integer_counts() {
    let a = NormPartials { sumsq: 1e300, abssum: 1.0, maxabs: 3.0, nan: 0, inf: 2, first_nonfinite_segment: 7, halted: 0 };
    let b = NormPartials { sumsq: 1e300, abssum: 2.0, maxabs: 5.0, nan: u32::MAX, inf: 0, first_nonfinite_segment: 4, halted: 1 };
    let c = NormPartials::combine(&[a, b]);
    assert_eq!((c.sumsq, c.abssum, c.maxabs), (2e300, 3.0, 5.0));
    assert_eq!((c.nan, c.inf, c.first_nonfinite_segment, c.halted), (u32::MAX, 2, 4, 1), "counts saturate; the first segment is the least");
    let none = NormPartials::combine(&[]);
    assert_eq!(none.first_nonfinite_segment, u32::MAX);
    // One process: the exchange hands back its own partials.
    assert_eq!(a.all_reduce(&Solo).unwrap(), NormPartials::combine(&[a]));
    assert_eq!(Solo.size(), 1);
}
