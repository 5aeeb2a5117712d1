//! The unified mm reference: one deterministic model of Linux memory management (the
//! *machine*), an independent flat specification of what Linux promises (the *spec*), and
//! the oracles that judge the machine after every step.
//!
//! The reference knows nothing of traces, fuzzers or I/O: it is driven through [`run`] with
//! plain values ([`Config`], [`FileInit`], [`TaskInit`], [`Call`], [`SchedToken`]) and answers
//! with plain values ([`RunReport`]). It has no clocks, threads, global state or hash-order
//! dependence: the same input gives the same report, bit for bit.
//!
//! A panic inside the reference is a bug of the model (an assertion of the reference failed);
//! a [`Violation`] is a bug found in the modelled kernel (an oracle's verdict). The two are
//! never mixed.
#![forbid(unsafe_code)]

mod coverage;
pub mod events;
mod kernel;
mod machine;
mod oracle;
mod run;
pub mod spec;
mod types;
mod unchanged;

pub use run::{run, Outcome, Reference, RunOptions, RunReport};
pub use types::*;
