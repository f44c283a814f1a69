//! Twin of `shaders/copy.wgsl`.

/// `dst = src`. Panics if the lengths differ.
pub fn copy(src: &[f32], dst: &mut [f32]) {
    dst.copy_from_slice(src);
}
