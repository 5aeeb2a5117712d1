//! The trace language, the executor that drives the reference by a trace, the fuzz targets
//! and the minimizer.
#![forbid(unsafe_code)]

pub mod engine;
pub mod events;
pub mod exec;
pub mod gen;
pub mod guided;
pub mod minimize;
pub mod mutate;
pub mod targets;
pub mod trace;
