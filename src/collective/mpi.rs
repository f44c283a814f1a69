//! MPI's `COMM_WORLD` as a [`Collective`] (feature `mpi`, the `mpi` crate over the system's
//! MPI library), with a watchdog: a collective that waits longer than its timeout for the
//! other ranks (one failed, hangs or was killed) ends this process with a message, and
//! `mpirun` then ends the job, instead of every rank waiting for ever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::CommunicatorCollectives;

use super::{check_lengths, Collective};
use crate::error::{Error, Result};

/// Exit status of a rank whose collective timed out.
pub const TIMED_OUT: i32 = 124;

/// Whether this process was started by an MPI launcher (`mpirun`, `srun`, …).
pub fn launched_by_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"].iter().any(|v| std::env::var_os(v).is_some())
}

/// `COMM_WORLD`, initialised once per process; MPI is finalised when this is dropped.
pub struct MpiCollective {
    world: SimpleCommunicator,
    watch: Arc<Watch>,
    // Dropped last: finalising MPI ends every communicator.
    _universe: mpi::environment::Universe,
}

/// When the collective in flight began (ms since `origin`, plus 1; 0 when none is).
struct Watch {
    origin: Instant,
    entered: AtomicU64,
}

impl Watch {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }
}

impl MpiCollective {
    /// Initialises MPI and starts the watchdog: a collective still waiting after `timeout`
    /// ends the process with status [`TIMED_OUT`]. `Error::AlreadyInitialised`
    /// if MPI was initialised already in this process.
    pub fn init(timeout: Duration) -> Result<Self> {
        let universe = mpi::initialize().ok_or(Error::AlreadyInitialised("MPI"))?;
        let world = universe.world();
        let watch = Arc::new(Watch { origin: Instant::now(), entered: AtomicU64::new(0) });
        let (rank, size) = (world.rank(), world.size());
        let watched = Arc::clone(&watch);
        std::thread::Builder::new()
            .name("gradguard mpi watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                let entered = watched.entered.load(Ordering::Acquire);
                if entered != 0 && watched.now_ms().saturating_sub(entered) > timeout.as_millis() as u64 {
                    eprintln!(
                        "gradguard: rank {rank} of {size}: the other ranks did not answer a collective within {} s \
                         (one failed, hangs or was killed); ending the job",
                        timeout.as_secs_f64()
                    );
                    std::process::exit(TIMED_OUT);
                }
            })
            .map_err(|source| Error::Io { action: "starting the MPI watchdog thread for", path: "COMM_WORLD".into(), source })?;
        Ok(Self { world, watch, _universe: universe })
    }

    /// Ends every rank of the job at once (`MPI_Abort`) with status `code`: what a rank
    /// that cannot go on does, so that the others do not wait for it.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Runs `f` with the watchdog armed.
    fn watched<T>(&self, f: impl FnOnce() -> T) -> T {
        self.watch.entered.store(self.watch.now_ms(), Ordering::Release);
        let out = f();
        self.watch.entered.store(0, Ordering::Release);
        out
    }
}

impl Collective for MpiCollective {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// `MPI_Allreduce` with `MPI_SUM`. MPI does not promise every rank the same bits, but
    /// Open MPI's and MPICH's algorithms (reduce-scatter then all-gather, recursive
    /// doubling) give them; the trainer checks that its replicas agree at the end of a run.
    fn sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        check_lengths("sum_f32", send.len(), recv.len())?;
        self.watched(|| self.world.all_reduce_into(send, recv, SystemOperation::sum()));
        Ok(())
    }

    fn gather_u32(&self, send: &[u32], recv: &mut [u32]) -> Result<()> {
        check_lengths("gather_u32", send.len() * self.size(), recv.len())?;
        self.watched(|| self.world.all_gather_into(send, recv));
        Ok(())
    }
}
