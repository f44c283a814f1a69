//! The `gradguard` command line.

use clap::{Parser, Subcommand};
use gradguard::bench::clip::Which;
use gradguard::Gpu;

#[derive(Parser)]
#[command(version, about = "GPU kernels that measure and tame exploding gradients")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `gradguard bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchKind {
    Norm,
    Clip,
    /// Norm and clip.
    All,
    /// GEMM: the tiled kernel against a naive WGSL kernel and a CPU sgemm.
    Matmul,
    /// Training steps of the lab's MLP and RNN: rate, submits, waits, recording, memory.
    Train,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter: backend, type, subgroup sizes, binding limit, timestamps.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// Norm and clip throughput against the device's copy bandwidth, or matmul against a
    /// CPU sgemm and a naive kernel, in one run.
    Bench {
        #[arg(value_enum, default_value = "all")]
        which: BenchKind,
        /// Elements (f32) in the gradient set.
        #[arg(long, default_value_t = 1 << 24)]
        elems: u64,
        /// Segments (tensors) the set is cut into; repeat for several (default: 1 and 1000, or
        /// 1 alone below 1000 elements).
        #[arg(long)]
        segments: Vec<u32>,
        /// Matmul: comma-separated sizes, each an edge (square), MxNxK or `mlp` (a 256-wide
        /// layer at batch 512); all four transpose cases each [default: 256,512,1024,2048,mlp]
        #[arg(long, value_delimiter = ',')]
        sizes: Vec<gradguard::bench::matmul::Size>,
        /// Timed repetitions; the median is reported (matmul: at most this many, fewer where
        /// they would take over ~0.6 s).
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
        reps: u32,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Train: also run the PyTorch peer (`benches/torch_train_peer.py`, needs python3
        /// with torch) on this torch device (`cpu`, `cuda`) and report the ratios.
        #[arg(long)]
        peer: Option<String>,
    },
    /// Train an MLP or a vanilla RNN on the GPU, watching every layer's gradient norm.
    Train(gradguard::train::args::TrainArgs),
    /// Run an exploding configuration and every remedy from the same seed; compare.
    Lab {
        /// Longer runs (minutes) instead of the quick default.
        #[arg(long, conflicts_with = "paper")]
        full: bool,
        /// Pascanu et al. 2013's comparison instead: plain SGD against SGD with norm
        /// clipping on the adding problem, over lengths and seeds (paper.txt, paper.svg).
        #[arg(long)]
        paper: bool,
        /// --paper: SGD updates each run may take [default: 250: 18 to 30 minutes for the 80
        /// runs on lavapipe with 2 cores; the paper's runs took up to millions].
        #[arg(long, requires = "paper", value_parser = clap::value_parser!(u64).range(1..))]
        updates: Option<u64>,
        /// --paper: runs per length, start and method [default: 5].
        #[arg(long, requires = "paper", value_parser = clap::value_parser!(u64).range(1..))]
        seeds: Option<u64>,
        /// --paper: comma-separated sequence lengths (≥ 10) [default: 50,100,150,200].
        #[arg(long, requires = "paper", value_delimiter = ',')]
        lengths: Vec<u32>,
        /// Seed of every run (--paper: seeds 0 … --seeds − 1).
        #[arg(long, default_value_t = 0, conflicts_with = "paper")]
        seed: u64,
        /// Where the table, comparison.svg and summary.json go.
        #[arg(long, default_value = "gradguard-lab")]
        out: std::path::PathBuf,
    },
}

/// Exit status of a training run that stopped early; 1 is an error, 2 a usage error.
const STOPPED_EARLY: i32 = 3;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Where compiled pipelines are kept between runs: `GRADGUARD_CACHE_DIR` (empty or `off`:
/// nowhere), else `$XDG_CACHE_HOME/gradguard`, else `~/.cache/gradguard`.
fn pipeline_cache_dir() -> Option<std::path::PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    match std::env::var("GRADGUARD_CACHE_DIR") {
        Ok(dir) if dir.is_empty() || dir == "off" => None,
        Ok(dir) => Some(dir.into()),
        Err(_) => var("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| var("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
            .map(|d| d.join("gradguard")),
    }
}

/// The device, compiling through the on-disk pipeline cache where the driver keeps one.
/// One process of several on a machine (an MPI job's ranks, as the launcher numbers them
/// on the machine) takes its own GPU where there are several.
fn open_gpu() -> gradguard::Result<Gpu> {
    let local_rank = ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
        .unwrap_or(0);
    let gpu = Gpu::for_local_rank(local_rank)?;
    if let Some(dir) = pipeline_cache_dir() {
        gradguard::kernels::KernelCache::of(&gpu.device).use_disk_cache(&gpu.device, &dir);
    }
    Ok(gpu)
}

/// Saves what this run compiled for the next; a failure costs only the warm start.
fn keep_pipelines(gpu: &Gpu) {
    if let Err(e) = gradguard::kernels::KernelCache::of(&gpu.device).save_disk_cache() {
        log::warn!("the pipeline cache was not saved (the next run compiles afresh): {e}");
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Train(args) => {
            #[cfg(feature = "mpi")]
            if gradguard::collective::mpi::launched_by_mpirun() {
                train_rank(&args);
            }
            let gpu = open_gpu()?;
            let outcome = gradguard::train::args::run(&gpu, &args, None)?;
            keep_pipelines(&gpu);
            let status = report_training(&outcome)?;
            if status != 0 {
                std::process::exit(status);
            }
        }
        Command::Lab { paper: true, updates, seeds, lengths, out, .. } => {
            let defaults = gradguard::lab::paper::PaperConfig::default();
            let config = gradguard::lab::paper::PaperConfig {
                lengths: if lengths.is_empty() { defaults.lengths } else { lengths },
                seeds: seeds.unwrap_or(defaults.seeds),
                updates: updates.unwrap_or(defaults.updates),
            };
            config.validate()?;
            let gpu = open_gpu()?;
            gradguard::lab::paper::write(&out, &[], config.updates)?;
            gradguard::lab::paper::run(&gpu, &config, |runs| {
                let r = runs.last().expect("called after a run");
                let s = &r.summary;
                println!(
                    "T={:<4} {:<11} {:<6} seed {}: {} ({:.2}% wrong{}) {:.1} s",
                    r.length,
                    r.start,
                    if r.clipped { "SGD-C" } else { "SGD" },
                    r.seed,
                    if s.solved { "solved" } else if s.exploded { "exploded" } else { "not solved" },
                    100.0 * s.test.error_rate,
                    s.solved_at.map_or(String::new(), |k| format!(", at {k}")),
                    s.seconds
                );
                gradguard::lab::paper::write(&out, runs, config.updates)
            })
            .map(|runs| print!("\n{}", gradguard::lab::paper::table(&runs)))?;
            keep_pipelines(&gpu);
            println!("wrote {}/paper.txt, paper.svg and paper.json", out.display());
        }
        Command::Lab { full, seed, out, .. } => {
            let gpu = open_gpu()?;
            // Written before the first run and after every one: an unwritable --out fails at
            // once, and a lab stopped halfway keeps what it finished.
            gradguard::lab::write(&out, &[])?;
            println!("{}", gradguard::lab::table_header());
            gradguard::lab::run(&gpu, full, seed, |runs| {
                println!("{}", gradguard::lab::table_row(runs.last().expect("called after a run")));
                gradguard::lab::write(&out, runs)
            })?;
            keep_pipelines(&gpu);
            println!("wrote {}/table.txt, comparison.svg and summary.json", out.display());
        }
        Command::Devices { json } => {
            let adapters = gradguard::gpu::list_adapters()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&adapters)?);
            } else if adapters.is_empty() {
                return Err(Box::new(gradguard::Error::NoAdapter { detail: String::new() }));
            } else {
                for a in adapters {
                    println!(
                        "{} — {} {} ({}) subgroups {}..{}, max storage binding {} MiB, timestamps {}",
                        a.name,
                        a.backend,
                        a.device_type,
                        a.driver,
                        a.subgroup_min_size,
                        a.subgroup_max_size,
                        a.max_storage_binding_bytes >> 20,
                        if a.timestamp_queries { "yes" } else { "no" }
                    );
                }
            }
        }
        Command::Bench { which, elems, segments, sizes, reps, json, peer } => {
            let gpu = open_gpu()?;
            let segments = if segments.is_empty() { [1, 1000].into_iter().filter(|&s| s <= elems).map(|s| s as u32).collect() } else { segments };
            let which = match which {
                BenchKind::Norm => Which::Norm,
                BenchKind::Clip => Which::Clip,
                BenchKind::All => Which::All,
                BenchKind::Matmul => return bench_matmul(&gpu, sizes, reps, json),
                BenchKind::Train => return bench_train(&gpu, json, peer.as_deref()),
            };
            let report = gradguard::bench::clip::run(&gpu, which, elems, &segments, reps)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
        }
    }
    Ok(())
}

/// Prints a run's summary and returns the exit status: 0, or, for a run that stopped early
/// (`--on-nonfinite error`, `--stop-on-explosion`, a signal) and has written its outputs and
/// a checkpoint, a status of its own (clap's usage errors take 2; a signal 128 + its number,
/// as a shell reports it).
fn report_training(outcome: &gradguard::train::args::Outcome) -> Result<i32, Box<dyn std::error::Error>> {
    println!("{}", serde_json::to_string_pretty(&outcome.summary)?);
    if let Some(reason) = &outcome.summary.stopped {
        eprintln!("gradguard: training {reason}");
    }
    Ok(exit_status(outcome))
}

fn exit_status(outcome: &gradguard::train::args::Outcome) -> i32 {
    match (&outcome.summary.stopped, outcome.signal) {
        (None, _) => 0,
        (Some(_), Some(signal)) => 128 + signal,
        (Some(_), None) => STOPPED_EARLY,
    }
}

/// `gradguard train` as one rank of an `mpirun` job: rank 0 prints and writes; a rank that
/// fails ends every rank at once (`MPI_Abort`), so none waits for it.
#[cfg(feature = "mpi")]
fn train_rank(args: &gradguard::train::args::TrainArgs) -> ! {
    use gradguard::collective::{mpi::MpiCollective, Collective};
    let world = match MpiCollective::init(std::time::Duration::from_secs_f64(args.mpi_timeout)) {
        Ok(world) => world,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let (rank, size) = (world.rank(), world.size());
    let run = || -> Result<i32, Box<dyn std::error::Error>> {
        let gpu = open_gpu()?;
        let outcome = gradguard::train::args::run(&gpu, args, Some(&world))?;
        match rank {
            0 => {
                keep_pipelines(&gpu);
                report_training(&outcome)
            }
            _ => Ok(exit_status(&outcome)),
        }
    };
    match run() {
        Ok(status) => {
            drop(world); // MPI_Finalize, before the exit
            std::process::exit(status)
        }
        Err(e) => {
            eprintln!("error: rank {rank} of {size}: {e}");
            world.abort(1)
        }
    }
}

/// Under `mpirun` (feature `mpi`), every rank measures as one rank of the group and rank 0
/// prints.
fn bench_train(gpu: &Gpu, json: bool, peer: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    use gradguard::bench::train;
    use gradguard::Collective;
    #[cfg(feature = "mpi")]
    let world = match gradguard::collective::mpi::launched_by_mpirun() {
        true => Some(gradguard::collective::mpi::MpiCollective::init(std::time::Duration::from_secs(120))?),
        false => None,
    };
    #[cfg(feature = "mpi")]
    let group = world.as_ref().map(|w| w as &dyn Collective);
    #[cfg(not(feature = "mpi"))]
    let group: Option<&dyn Collective> = None;
    if group.is_some() && peer.is_some() {
        return Err(Box::new(gradguard::Error::Usage("--peer runs alone, not under mpirun (the ranks would share the cores with it)".into())));
    }
    let report = train::run(gpu, &Default::default(), group)?;
    if group.is_some_and(|g| g.rank() != 0) {
        return Ok(());
    }
    // The peer runs after ours, never beside it: both would share the cores.
    let peer = peer.map(train::torch_peer).transpose()?;
    let ratios = peer.as_ref().map(|p| train::peer_ratios(&report, p));
    if json {
        let all = serde_json::json!({ "gradguard": report, "peer": peer, "ratios": ratios });
        println!("{}", serde_json::to_string(if peer.is_some() { &all } else { &all["gradguard"] })?);
        return Ok(());
    }
    print!("{}", report.table());
    if let Some(ratios) = ratios {
        println!("\n{:<30} {:<16} {:>12} {:>14}", "against PyTorch", "peer", "peer steps/s", "ours / peer");
        for r in ratios {
            println!("{:<30} {:<16} {:>12.1} {:>14.2}", r.model, r.implementation, r.peer_steps_per_s, r.ratio);
        }
    }
    Ok(())
}

fn bench_matmul(
    gpu: &Gpu,
    sizes: Vec<gradguard::bench::matmul::Size>,
    reps: u32,
    json: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = gradguard::bench::matmul::MatmulConfig { max_reps: reps, ..Default::default() };
    if !sizes.is_empty() {
        config.sizes = sizes;
    }
    let report = gradguard::bench::matmul::run(gpu, &config, &mut |line| eprintln!("{line}"))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
