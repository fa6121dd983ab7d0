//! Transforms over Arrow batches: the SQL stage and output routing filters.

pub mod route;
pub mod sql;
