//! The data-parallel path of a trainer in one process: a one-rank group trains bit for bit
//! as a plain trainer (the sum over ranks is staged through the host and written back
//! unchanged), batches split over ranks cover every row once, and what a group cannot run
//! is refused before anything is allocated. Runs across processes are in `mpi.rs`.
#![cfg(feature = "train")]

mod common;

use common::gpu;

use gradguard::error::Error;
use gradguard::lab::{exploding_mlp, exploding_rnn};
use gradguard::train::replicas::shard;
use gradguard::train::{ClipSetting, Fault, FaultKind, TrainConfig, Trainer};
use gradguard::{Collective, NormKind, Solo};

/// Claims `size` ranks; constructions that must fail never reach a collective.
struct Claimed {
    size: usize,
}

impl Collective for Claimed {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        self.size
    }
    fn sum_f32(&self, _: &[f32], _: &mut [f32]) -> gradguard::Result<()> {
        panic!("a refused configuration reached a collective")
    }
    fn gather_u32(&self, _: &[u32], _: &mut [u32]) -> gradguard::Result<()> {
        panic!("a refused configuration reached a collective")
    }
}

fn run_both(mut config: TrainConfig) {
    config.steps = 12;
    config.clip = ClipSetting::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };
    let mut plain = Trainer::new(gpu(), config.clone()).unwrap();
    let a = plain.run(|_, _| Ok(())).unwrap();
    let mut solo = Trainer::with_collective(gpu(), config, Some(&Solo)).unwrap();
    let b = solo.run(|_, _| Ok(())).unwrap();
    assert_eq!(plain.records(), solo.records(), "per-step losses, norms and events");
    assert_eq!(plain.read_params().unwrap(), solo.read_params().unwrap(), "final weights, bit for bit");
    assert_eq!((a.submits, b.submits), (12, 24), "a group's step is two submissions: before and after the sum");
    let counters = b.replicas.expect("a group's summary says what it reduced");
    assert_eq!((counters.ranks, counters.steps), (1, 12));
    assert_eq!(counters.bytes_per_step, 4 * (solo.model().arena().len() + 2), "gradients, loss and the stop word");
    assert!(a.replicas.is_none());
}

#[test]
fn a_one_rank_group_trains_the_mlp_bit_for_bit_as_one_process() {
    run_both(exploding_mlp(12, 0));
}

#[test]
fn a_one_rank_group_trains_the_rnn_bit_for_bit_as_one_process() {
    run_both(exploding_rnn(12, 30, 0));
}

#[test]
fn shards_cover_every_row_of_a_batch_once() {
    for (batch, ranks) in [(64, 2), (63, 2), (7, 3), (5, 5), (100, 7)] {
        let parts: Vec<_> = (0..ranks).map(|r| shard(batch, ranks, r)).collect();
        assert_eq!(parts.iter().flat_map(|p| p.clone()).collect::<Vec<_>>(), (0..batch).collect::<Vec<_>>());
        let (small, big) = (parts.iter().map(|p| p.len()).min().unwrap(), parts.iter().map(|p| p.len()).max().unwrap());
        assert!(big - small <= 1 && small >= 1, "{batch} over {ranks}: {parts:?}");
    }
    assert_eq!(shard(63, 2, 0), 0..32);
    assert_eq!(shard(63, 2, 1), 32..63);
}

#[test]
fn a_group_refuses_what_it_cannot_run() {
    let mut config = exploding_mlp(5, 0);
    config.batch = 3;
    let four = Claimed { size: 4 };
    assert!(matches!(Trainer::with_collective(gpu(), config.clone(), Some(&four)), Err(Error::OutOfRange { what: "the batch size", .. })));

    config.batch = 8;
    config.faults = vec![Fault { step: 1, layer: "linear1".into(), kind: FaultKind::Nan, rank: Some(4) }];
    let e = Trainer::with_collective(gpu(), config.clone(), Some(&four)).err().expect("a fault on rank 4 of 4 is refused");
    assert!(matches!(e, Error::NotBelow { what: "a fault's rank", value: 4, limit: 4 }), "{e}");

    config.faults.clear();
    if let gradguard::train::ModelChoice::Mlp { batchnorm, .. } = &mut config.model {
        *batchnorm = true;
    }
    let two = Claimed { size: 2 };
    let e = Trainer::with_collective(gpu(), config.clone(), Some(&two)).err().expect("batch norm over two ranks is refused");
    assert!(e.to_string().contains("batch norm over 2 data-parallel ranks"), "{e}");

    config = exploding_mlp(5, 0);
    config.watch_forward = true;
    let e = Trainer::with_collective(gpu(), config, Some(&two)).err().expect("the forward watch over two ranks is refused");
    assert!(matches!(e, gradguard::Error::Incompatible { setting: "watch_forward", .. }), "{e}");
    assert!(e.to_string().contains("2 data-parallel ranks"), "{e}");
}
