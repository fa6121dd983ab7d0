//! The call path of one model call, one layer per file, composed in [`stack`] (outermost
//! first): [`deadline`] → [`fallback`] → [`retry`] (budgeted) → [`balance`] (p2c, ejection,
//! in-flight limit) → [`attempt_timeout`] → [`backend`]. [`service`] is the shape they share
//! and what passes between them; [`liveness`] and [`metrics`] are the state and telemetry
//! the version's layers share.

pub(crate) mod attempt_timeout;
pub(crate) mod backend;
pub(crate) mod balance;
pub(crate) mod deadline;
pub(crate) mod fallback;
pub(crate) mod liveness;
pub(crate) mod metrics;
pub(crate) mod retry;
pub(crate) mod service;
pub(crate) mod stack;
#[cfg(test)]
mod testing;
