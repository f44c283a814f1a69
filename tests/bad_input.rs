//! Bad input gets a typed error naming the problem, never a panic.

mod common;

use common::*;
use gradguard::wgpu;
use gradguard::{
    ClipPolicy, Error, GradClip, GradNorm, GradSet, GradView, NonFinitePolicy, NormConfig, NormKind, TileLayout,
};

fn norm_err(set: &GradSet, config: &NormConfig) -> Error {
    GradNorm::new(&gpu().device, set, config).unwrap_err()
}

#[test]
fn empty_set() {
    assert!(matches!(norm_err(&GradSet::new(vec![]), &NormConfig::default()), Error::EmptySet));
}

#[test]
fn misaligned_offset() {
    let buffer = upload(&[1.0; 16]);
    let set = GradSet::new(vec![GradView { buffer, offset: 6, len: 2 }]);
    assert!(matches!(norm_err(&set, &NormConfig::default()), Error::MisalignedOffset { segment: 0, offset: 6 }));
}

#[test]
fn segment_past_the_end() {
    let buffer = upload(&[1.0; 16]);
    let set = GradSet::new(vec![GradView { buffer: buffer.clone(), offset: 0, len: 4 }, GradView { buffer, offset: 32, len: 9 }]);
    assert!(matches!(norm_err(&set, &NormConfig::default()), Error::OutOfBounds { segment: 1, .. }));
}

#[test]
fn buffer_without_storage_usage() {
    let buffer = upload_with(&[1.0; 16], wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC);
    let err = norm_err(&GradSet::packed(&buffer, &[16]), &NormConfig::default());
    assert!(matches!(err, Error::MissingUsage { segment: 0, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "segment 0: its buffer lacks usage STORAGE (create it with BufferUsages::STORAGE)",
        "flags by name, not wgpu's Debug form"
    );
}

#[test]
fn non_positive_thresholds() {
    let buffer = upload(&[1.0; 16]);
    let set = GradSet::packed(&buffer, &[16]);
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let config = NormConfig { max_norm: Some(bad), ..Default::default() };
        assert!(matches!(norm_err(&set, &config), Error::NotPositive { what: "max_norm", .. }));
        let policies = [
            ClipPolicy::GlobalNorm { max_norm: bad, kind: NormKind::L2 },
            ClipPolicy::Value { clip_value: bad },
            ClipPolicy::PerSegmentNorm { max_norm: bad, kind: NormKind::L1 },
        ];
        for policy in policies {
            let err = GradClip::new(&gpu().device, &set, policy, NonFinitePolicy::Propagate).unwrap_err();
            assert!(matches!(err, Error::NotPositive { .. }), "{err}");
        }
    }
}

#[test]
fn agc_parameter_mismatch() {
    let grads = upload(&[1.0; 32]);
    let params = upload(&[1.0; 32]);
    let set = GradSet::packed(&grads, &[16, 16]);
    let cases = [
        (GradSet::packed(&params, &[16, 15]), vec![4, 4]),
        (GradSet::packed(&params, &[32]), vec![4, 4]),
        (GradSet::packed(&params, &[16, 16]), vec![4]),
        (GradSet::packed(&params, &[16, 16]), vec![5, 4]),
    ];
    for (params, unit_lens) in cases {
        let policy = ClipPolicy::Agc { clipping: 0.01, eps: 1e-3, params, unit_lens };
        let err = GradClip::new(&gpu().device, &set, policy, NonFinitePolicy::Propagate).unwrap_err();
        let unit_fault = matches!(err, Error::Incompatible { setting: "AGC unit length", .. });
        assert!(matches!(err, Error::LengthMismatch { .. }) || unit_fault, "{err}");
    }
}

#[test]
fn bad_tiling_config() {
    let buffer = upload(&[1.0; 16]);
    let set = GradSet::packed(&buffer, &[16]);
    for config in [NormConfig { tile_elems: Some(0), ..Default::default() }, NormConfig { tile_elems: Some(6), ..Default::default() }] {
        assert!(matches!(norm_err(&set, &config), Error::OutOfRange { what: "tile_elems", .. }));
    }
    // More than 2,048 elements per invocation: the plain f32 sums would lose accuracy.
    for (config, most) in [
        (NormConfig { tile_elems: Some(2052), tile_layout: Some(TileLayout::Invocation), ..Default::default() }, 2048),
        (
            NormConfig {
                tile_elems: Some(2048 * 16 + 4),
                workgroup_size: Some(16),
                tile_layout: Some(TileLayout::Workgroup),
                ..Default::default()
            },
            2048 * 16,
        ),
    ] {
        assert!(matches!(norm_err(&set, &config), Error::AboveMax { what: "tile_elems", max, .. } if max == most));
    }
    let small = NormConfig { max_binding_bytes: Some(100), ..Default::default() };
    assert!(matches!(norm_err(&set, &small), Error::OutOfRange { what: "max_binding_bytes", .. }));
    let eps = NormConfig { eps: -1.0, ..Default::default() };
    assert!(matches!(norm_err(&set, &eps), Error::OutOfRange { what: "eps", .. }));
}

#[test]
fn overlapping_segments() {
    let buffer = upload(&[1.0; 64]);
    let set = GradSet::new(vec![
        GradView { buffer: buffer.clone(), offset: 0, len: 10 },
        GradView { buffer: buffer.clone(), offset: 128, len: 4 },
        GradView { buffer, offset: 36, len: 2 },
    ]);
    assert!(matches!(norm_err(&set, &NormConfig::default()), Error::OverlappingSegments { first: 0, second: 2 }));
}

#[test]
fn agc_parameters_sharing_the_gradient_buffer() {
    let arena = upload(&[1.0; 64]);
    let grads = GradSet::new(vec![GradView { buffer: arena.clone(), offset: 0, len: 32 }]);
    let params = GradSet::new(vec![GradView { buffer: arena, offset: 128, len: 32 }]);
    let policy = ClipPolicy::Agc { clipping: 0.01, eps: 1e-3, params, unit_lens: vec![8] };
    let err = GradClip::new(&gpu().device, &grads, policy, NonFinitePolicy::Propagate).unwrap_err();
    assert!(matches!(err, Error::Aliased { .. }), "{err}");
}
