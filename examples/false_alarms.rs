//! How often the monitor's detectors fire on healthy runs that converge: the lab's two
//! models with their good init (the MLP with Kaiming's, the RNN with IRNN's and a global
//! norm clip of 1, as the README's adding example), over several seeds.
//!
//! `cargo run --release --example false_alarms [-- SEEDS]` prints one row per detector:
//! the events it raised and their rate per 1,000 steps. The explosion detectors should
//! stay at zero; the z-score and percentile spike detectors are warnings, and their rate
//! is the price of their sensitivity.

use gradguard::lab::{exploding_mlp, exploding_rnn};
use gradguard::monitor::Detector;
use gradguard::nn::InitScheme;
use gradguard::train::{ClipSetting, Trainer};
use gradguard::{Gpu, NormKind};

const DETECTORS: [Detector; 7] = [
    Detector::NonFiniteGradient,
    Detector::NonFiniteLoss,
    Detector::AbsoluteNorm,
    Detector::LossSpike,
    Detector::Spike,
    Detector::Percentile,
    Detector::DepthGrowth,
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seeds: u64 = std::env::args().nth(1).map_or(Ok(5), |s| s.parse())?;
    let gpu = Gpu::new()?;
    let mut healthy = Vec::new();
    for seed in 0..seeds {
        let mut mlp = exploding_mlp(300, seed);
        mlp.init = InitScheme::Kaiming;
        let mut rnn = exploding_rnn(3000, 50, seed);
        rnn.init = InitScheme::Identity { gain: 1.0 };
        rnn.clip = ClipSetting::GlobalNorm { max_norm: 1.0, kind: NormKind::L2 };
        for config in [mlp, rnn] {
            healthy.push(gradguard::train::TrainConfig { responses: Default::default(), ..config });
        }
    }
    let (mut steps, mut counts) = (0u64, [0u64; DETECTORS.len()]);
    for config in healthy {
        let name = format!("{} seed {}", config.task.name(), config.seed);
        let mut trainer = Trainer::new(&gpu, config)?;
        let summary = trainer.run(|_, _| Ok(()))?;
        steps += summary.steps_run;
        for e in trainer.monitor().events() {
            counts[DETECTORS.iter().position(|d| *d == e.detector).expect("every detector listed")] += 1;
        }
        println!("{name:<22} {} steps, test error rate {:.4}, exploded: {}", summary.steps_run, summary.test.error_rate, summary.exploded);
    }
    println!("\n{:<22} {:>10} {:>8} {:>16}", "detector", "explosion", "events", "per 1,000 steps");
    for (d, n) in DETECTORS.iter().zip(counts) {
        println!("{:<22} {:>10} {n:>8} {:>16.2}", d.name(), if d.is_explosion() { "yes" } else { "no" }, 1e3 * n as f64 / steps as f64);
    }
    println!("{steps} steps in all");
    Ok(())
}
