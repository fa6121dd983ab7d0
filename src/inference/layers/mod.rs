//! The call path of one model call, one layer per file, composed in [`stack`] (outermost
//! first): [`deadline`] → [`fallback`] → [`retry`] (budgeted) → [`balance`] (p2c, ejection,
//! in-flight limit) → [`attempt_timeout`] → [`backend`]. [`service`] is the shape they share
//! and what passes between them; [`liveness`] and [`metrics`] are the state and telemetry
//! the version's layers share.

pub mod attempt_timeout;
pub mod backend;
pub mod balance;
pub mod deadline;
pub mod fallback;
pub mod liveness;
pub mod metrics;
pub mod retry;
pub mod service;
pub mod stack;
#[cfg(test)]
mod testing;
