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
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter: backend, type, subgroup sizes, binding limit, timestamps.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// Norm and clip throughput against the device's copy bandwidth, in one run.
    Bench {
        #[arg(value_enum, default_value = "all")]
        which: BenchKind,
        /// Elements (f32) in the gradient set.
        #[arg(long, default_value_t = 1 << 24)]
        elems: u64,
        /// Segments (tensors) the set is cut into; repeat for several (default: 1 and 1000).
        #[arg(long)]
        segments: Vec<u32>,
        /// Timed repetitions; the median is reported.
        #[arg(long, default_value_t = 15)]
        reps: u32,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Devices { json } => {
            let adapters = gradguard::gpu::list_adapters();
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
        Command::Bench { which, elems, segments, reps, json } => {
            let gpu = Gpu::new()?;
            let segments = if segments.is_empty() { vec![1, 1000] } else { segments };
            let which = match which {
                BenchKind::Norm => Which::Norm,
                BenchKind::Clip => Which::Clip,
                BenchKind::All => Which::All,
            };
            let report = gradguard::bench::clip::run(&gpu, which, elems, &segments, reps.max(1))?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
        }
    }
    Ok(())
}
