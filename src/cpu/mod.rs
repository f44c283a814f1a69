//! CPU twins: each computes plainly, in f64, what the shader of the same name computes.
//! Tests compare the GPU against them.

pub mod agc;
pub mod clip;
pub mod copy;
pub mod norm;
