//! freshet-core: the shared vocabulary of freshet.
//!
//! - [`duration`]: durations as written in pipeline files (`500ms`, `90s`, `10m`, `1h`, `2d`);
//! - [`spec`]: the pipeline file, parsed and validated without I/O, with errors that name the
//!   file, the line and what was expected;
//! - [`event`]: decoding of JSON events into the fields a pipeline reads, with typed rejections;
//! - [`store`]: the online-store contract ([`store::OnlineStore`]) that the dataflow writes and the
//!   serving layer reads, so neither has to compile a store backend;
//! - [`drift`]: drift-monitoring results and the board of current monitor states that the HTTP
//!   layer reads;
//! - [`metrics`]: process-wide counters shared by the dataflow, the CLI and the HTTP layer;
//! - [`serving`]: the model-serving contract ([`serving::Scorer`]) that the serving layer reads
//!   models through, so it does not compile a learner, and the traffic policies.
//!
//! This crate depends on no engine, broker or store client (only on freshet-drift's pure
//! statistics, for the measure names and alert rules of `[[drift]]`).

pub mod drift;
pub mod duration;
pub mod event;
pub mod generate;
pub mod metrics;
pub mod model;
pub mod serving;
pub mod spec;
pub mod store;

pub use duration::HumanDuration;
