//! `gradguard bench norm|clip|all`: measures exactly the request, at any size the norm
//! handles, or refuses it with a typed error.
#![cfg(feature = "train")]

mod common;

use common::*;
use gradguard::bench::clip::{run, segment_lens, Which};
use gradguard::kernels::copy::CopyKernel;
use gradguard::Error;

#[test]
fn the_copy_binds_in_chunks_above_the_binding_limit() {
    let g = gpu();
    let limit = g.device.limits().max_storage_buffer_binding_size.min(g.device.limits().max_buffer_size - 65_536);
    let n = (limit / 4 + 4096) as usize;
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let (src, dst) = (upload(&data), upload(&vec![0.0; n]));
    let copy = CopyKernel::new(&g.device).unwrap();
    let binding = copy.bind(&g.device, &src, &dst, 4 * n as u64).unwrap();
    let mut encoder = g.device.create_command_encoder(&Default::default());
    copy.encode(&mut encoder.begin_compute_pass(&Default::default()), &binding);
    g.queue.submit([encoder.finish()]);
    let copied = download(&dst);
    let first_wrong = copied.iter().zip(&data).position(|(a, b)| a != b);
    assert_eq!(first_wrong, None, "the copy must reach past the first bound chunk");
}

#[test]
fn the_bench_measures_what_was_asked() {
    let report = run(gpu(), Which::All, 4100, &[1, 7], 1).unwrap();
    assert!(report.results.iter().all(|r| r.elements == 4100));
    let segments: Vec<u32> = report.results.iter().map(|r| r.segments).collect();
    assert_eq!(segments, [1, 1, 1, 1, 7, 7, 7], "copy, then norm, scale and norm + scale per segment count");
    assert!(report.results.iter().all(|r| r.millis > 0.0 && r.gbytes_per_s.is_finite()));
    for (total, count) in [(4100, 7), (1000, 1000), (5, 2), (1 << 20, 1000)] {
        let lens = segment_lens(total, count);
        assert_eq!((lens.len() as u32, lens.iter().sum::<u64>()), (count, total));
        assert!(lens.iter().all(|&l| l >= 1), "{total} in {count}: {lens:?}");
    }
}

#[test]
fn the_bench_refuses_what_it_would_change() {
    let g = gpu();
    let refused = |elements: u64, segments: &[u32], reps: u32| run(g, Which::Norm, elements, segments, reps).unwrap_err();
    for elements in [0, 1, 3, 10] {
        assert!(matches!(refused(elements, &[1], 1), Error::OutOfRange { what: "elements", .. }), "{elements}");
    }
    assert!(matches!(refused(8, &[0], 1), Error::OutOfRange { what: "segments", .. }));
    assert!(matches!(refused(8, &[1, 9], 1), Error::OutOfRange { what: "segments", .. }));
    assert!(matches!(refused(8, &[1], 0), Error::OutOfRange { what: "repetitions", .. }));
    let beyond = (g.device.limits().max_buffer_size / 16 + 1) * 4;
    let err = refused(beyond, &[1], 1);
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("max_buffer_size"), "{err}");
}
