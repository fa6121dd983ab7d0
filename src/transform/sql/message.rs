//! Error messages shown to users: the hidden row-id column removed, length bounded.

use datafusion::common::DataFusionError;

use super::{INPUT_TABLE, MAX_MESSAGE, ROW_ID};

/// DataFusion's message, without the hidden column in "valid fields" lists, bounded.
pub(super) fn error_message(e: &DataFusionError) -> String {
    let text = e.to_string();
    let text = text
        .replace(&format!(", {INPUT_TABLE}.{ROW_ID}"), "")
        .replace(&format!(", {ROW_ID}"), "");
    trim(&text)
}

pub(super) fn trim(message: &str) -> String {
    crate::batch::truncate_message(message, MAX_MESSAGE)
}
