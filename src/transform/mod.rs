//! Transforms over Arrow batches: the SQL stage and output routing filters.

pub(crate) mod route;
pub mod sql;
