//! Label names shared by the families' definitions and the typed reads of [`super::stats`]:
//! one spelling each, so a renamed label is renamed for both.

/// The pipeline a series belongs to.
pub(crate) const PIPELINE: &str = "pipeline";
/// The output (by name) rows were delivered to.
pub(crate) const OUTPUT: &str = "output";
/// A model of the registry.
pub(crate) const MODEL: &str = "model";
/// A version of a model.
pub(crate) const VERSION: &str = "version";
/// A replica's address.
pub(crate) const REPLICA: &str = "replica";
/// How a model call ended: [`OUTCOME_OK`] or an error kind.
pub(crate) const OUTCOME: &str = "outcome";
/// The outcome of a successful model call.
pub(crate) const OUTCOME_OK: &str = "ok";
