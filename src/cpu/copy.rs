//! Twin of `shaders/copy.wgsl`.

pub fn copy(src: &[f32], dst: &mut [f32]) {
    dst.copy_from_slice(src);
}
