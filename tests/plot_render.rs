//! The plots rendered to pixels (resvg) and checked for what a reader needs: the size, ink,
//! every series' colour, the event and non-finite marks, legends that list what is drawn,
//! tick labels that are round numbers, the whole run on the x axis. PNGs of each land in
//! `target/plots/` to look at.
#![cfg(feature = "train")]

use gradguard::monitor::{Detector, Explosion};
use gradguard::plot::{svg, Chart, Series, WIDTH};
use gradguard::train::{run_plot, StepRecord};

fn render(name: &str, svg: &str) -> resvg::tiny_skia::Pixmap {
    let mut options = resvg::usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    // fontdb's generic sans-serif is Arial; Debian ships DejaVu (and CI may have neither:
    // then the text is not drawn, and the checks on it read the SVG instead).
    options.fontdb_mut().set_sans_serif_family("DejaVu Sans");
    let tree = resvg::usvg::Tree::from_str(svg, &options).expect("plotters writes valid SVG");
    let size = tree.size().to_int_size();
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).expect("a non-empty image");
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plots");
    std::fs::create_dir_all(&dir).unwrap();
    pixmap.save_png(dir.join(format!("{name}.png"))).unwrap();
    pixmap
}

/// Pixels within a small distance of `rgb`.
fn pixels_of(pixmap: &resvg::tiny_skia::Pixmap, rgb: (u8, u8, u8)) -> usize {
    let near = |a: u8, b: u8| a.abs_diff(b) < 24;
    pixmap.pixels().iter().map(|p| p.demultiply()).filter(|p| near(p.red(), rgb.0) && near(p.green(), rgb.1) && near(p.blue(), rgb.2)).count()
}

fn ink(pixmap: &resvg::tiny_skia::Pixmap) -> f64 {
    let dark = pixmap.pixels().iter().map(|p| p.demultiply()).filter(|p| p.red() < 200 || p.green() < 200 || p.blue() < 200).count();
    dark as f64 / pixmap.pixels().len() as f64
}

/// The numbers written as text in `svg` (tick labels among them).
fn numbers(svg: &str) -> Vec<String> {
    svg.split("<text").skip(1).filter_map(|t| t.split_once('>').map(|(_, rest)| rest.split('<').next().unwrap_or("").trim().to_string())).filter(|t| t.parse::<f64>().is_ok()).collect()
}

/// A 100-step run whose norm turns inf at step 10 and its loss NaN at 12.
fn exploding_records() -> (Vec<StepRecord>, Vec<Explosion>) {
    let records = (0..100u64)
        .map(|step| {
            let norm = if step < 10 { 1.5f32.powi(step as i32 + 1) } else { f32::INFINITY };
            StepRecord {
                step,
                loss: if step < 12 { 2.0 / (step + 1) as f32 } else { f32::NAN },
                norm,
                applied_norm: norm.min(5.0),
                layer_norms: vec![norm as f64 * 0.1, norm as f64 * 0.5, norm as f64],
                lr: 0.01,
                skipped: false,
                events: Vec::new(),
            }
        })
        .collect();
    let event = |step, detector| Explosion { step, detector, layer: "linear2".into(), value: 1.0, threshold: 0.0 };
    (records, vec![event(10, Detector::NonFiniteGradient), event(12, Detector::NonFiniteLoss)])
}

#[test]
fn a_run_plot_shows_the_whole_run_its_marks_and_a_legend_that_matches() {
    let (records, events) = exploding_records();
    let layers = vec!["linear1".to_string(), "linear2".into(), "linear3".into()];
    let svg = run_plot("wine", &records, &events, &layers).unwrap();
    std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("run.svg"), &svg).unwrap();
    let pixmap = render("run", &svg);
    assert_eq!((pixmap.width(), pixmap.height()), (WIDTH, 3 * 340));
    assert!(ink(&pixmap) > 0.01, "the plot is blank");
    assert!(pixels_of(&pixmap, (0x1f, 0x77, 0xb4)) > 200, "the first series is drawn");
    assert!(pixels_of(&pixmap, (0xd6, 0x27, 0x28)) > 100, "the second series is drawn");
    // The x axis runs to the last step, not to the last finite one.
    let labels = numbers(&svg);
    assert!(labels.iter().any(|l| l == "80" || l == "90"), "x ticks reach the end of the run: {labels:?}");
    // Every integer tick is a round number: a multiple of 10 over 100 steps.
    let x_ticks: Vec<i64> = labels.iter().filter_map(|l| l.parse::<i64>().ok()).filter(|&v| v >= 10).collect();
    assert!(x_ticks.iter().all(|v| v % 10 == 0), "ticks at round steps: {x_ticks:?}");
    assert!(svg.contains("events (2)") && svg.contains("first non-finite value"), "events and non-finite marks have legend entries");
    assert!(svg.contains("before clipping (non-finite at 10)"), "the legend says where a series went non-finite");
    for title in ["wine: global gradient norm", "training loss", "per-layer gradient norm by depth"] {
        assert!(svg.contains(title), "{title}");
    }
}

#[test]
fn a_single_step_is_drawn_not_an_empty_panel() {
    let (records, _) = exploding_records();
    let svg = run_plot("one step", &records[..1], &[], &["linear1".into(), "linear2".into(), "linear3".into()]).unwrap();
    let pixmap = render("one-step", &svg);
    assert!(pixels_of(&pixmap, (0x1f, 0x77, 0xb4)) > 20, "a lone point is drawn as a dot");
}

#[test]
fn many_series_each_get_a_colour_and_a_legend_row() {
    let series: Vec<Series> = (0..11)
        .map(|i| Series {
            name: format!("remedy {i}"),
            points: (0..300).map(|s| (s as f64, if i == 0 && s > 8 { f64::NAN } else { (1.0 + i as f64) * (1.0 + (s as f64 * 0.05).sin().abs()) })).collect(),
        })
        .collect();
    let chart = Chart { title: "lab".into(), x_label: "step".into(), y_label: "norm".into(), log_y: true, series, marks: Vec::new() };
    let svg = svg(&[chart]).unwrap();
    let pixmap = render("many", &svg);
    for i in 0..11 {
        assert!(svg.contains(&format!("remedy {i}")), "legend row {i}");
    }
    assert!(svg.contains("remedy 0 (non-finite at 9)"));
    assert!(pixels_of(&pixmap, (0x39, 0x3b, 0x79)) > 30, "the last series is visible");
}
