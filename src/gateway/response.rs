//! Error answers every part of the gateway gives: a JSON error body, 404 for an unknown model,
//! and the 401/403 of a refused credential.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::principal::Refusal;

/// A JSON error body: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// 404 for a model or version that does not exist.
pub(crate) fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such model or version")
}

/// 401 (with `WWW-Authenticate`) or 403.
pub(crate) fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::Unauthenticated => {
            let mut response = error(StatusCode::UNAUTHORIZED, "missing or invalid API key");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
            response
        }
        Refusal::Forbidden => error(StatusCode::FORBIDDEN, "the API key lacks the scope"),
    }
}
