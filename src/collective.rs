//! Collectives across ranks (processes, usually one per GPU): the reductions data-parallel
//! training and a sharded norm ([`crate::sharded_norm`]) need, behind a trait so that the
//! caller provides the transport. [`Solo`] is the group of one process; with the feature
//! `mpi`, `collective::mpi::MpiCollective` is MPI's `COMM_WORLD`.

use crate::error::{Error, Result};

#[cfg(feature = "mpi")]
pub mod mpi;

/// A fixed group of ranks that take part in every collective, in the same order.
pub trait Collective {
    /// This process's rank, 0-based.
    fn rank(&self) -> usize;

    /// Ranks in the group (≥ 1).
    fn size(&self) -> usize;

    /// `recv[i] = Σ over ranks of send[i]`, with the same bits on every rank. `send` and
    /// `recv` have one length, the same on every rank.
    fn sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;

    /// Every rank's `send` (one length on every rank) into `recv`, in rank order:
    /// `recv.len() == size() · send.len()`.
    fn gather_u32(&self, send: &[u32], recv: &mut [u32]) -> Result<()>;
}

/// One process alone: every collective is a copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_lengths("sum_f32", send.len(), recv.len())?;
        recv.copy_from_slice(send);
        Ok(())
    }

    fn gather_u32(&self, send: &[u32], recv: &mut [u32]) -> Result<()> {
        check_lengths("gather_u32", send.len(), recv.len())?;
        recv.copy_from_slice(send);
        Ok(())
    }
}

/// `Error::LengthMismatch` unless a collective's receive buffer holds `expected` values.
pub(crate) fn check_lengths(what: &str, expected: usize, actual: usize) -> Result<()> {
    match expected == actual {
        true => Ok(()),
        false => Err(Error::LengthMismatch { what: format!("{what}: receive buffer"), expected: expected as u64, actual: actual as u64 }),
    }
}
