//! Device failures become typed errors from the call that met them, never an abort.

mod common;

use common::*;
use gradguard::{ClipPolicy, Error, Gpu, GradClip, GradSet, NonFinitePolicy};

#[test]
fn a_lost_device_gives_typed_errors() {
    // A device of our own: destroying the shared test device would break other tests.
    let gpu = Gpu::new().unwrap_or_else(|e| panic!("GPU tests need an adapter: {e}"));
    let buffer = gpu.device.create_buffer(&gradguard::wgpu::BufferDescriptor {
        label: None,
        size: 4096,
        usage: USAGE,
        mapped_at_creation: false,
    });
    let set = GradSet::packed(&buffer, &[1024]);
    gpu.device.destroy();
    let err = GradClip::new(&gpu.device, &set, ClipPolicy::None, NonFinitePolicy::Propagate).unwrap_err();
    assert!(matches!(err, Error::Device { .. }), "{err}");
}
