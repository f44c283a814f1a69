//! CPU twins: each computes plainly, in f64, what the shader of the same name computes.
//! Tests compare the GPU against them.

pub mod activation;
pub mod adaptive;
pub mod agc;
pub mod batchnorm;
pub mod clip;
pub mod copy;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optimizer;
pub mod rnn;
