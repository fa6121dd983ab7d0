//! Routes of the mock model server.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::MockState;
use super::faults::Decision;

pub(super) fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v2/health/ready", get(|| async { "ready" }))
        .route("/v2/health/live", get(|| async { "live" }))
        .route("/v2/models/{name}", get(metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(metadata_version),
        )
        .route("/v2/models/{name}/infer", post(oip))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(oip_version),
        )
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models/{name_predict}", post(tf_predict))
        .route("/score", post(custom))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            echo_headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            track_in_flight,
        ))
        .with_state(state)
}

/// Counts every request while it is being served, for [`super::MockModel::peak_in_flight`].
async fn track_in_flight(
    State(state): State<Arc<MockState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let _in_flight = state.enter();
    next.run(request).await
}

/// The `echo_headers_status` fault: refuses every request, quoting its headers in the body
/// (in the JSON error text and as an object), as a backend that repeats credentials does.
async fn echo_headers(
    State(state): State<Arc<MockState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let echo = state
        .faults
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .echo_headers_status;
    let Some(code) = echo else {
        return next.run(request).await;
    };
    state.count_error();
    let mut quoted = Vec::new();
    let mut received = serde_json::Map::new();
    for (name, value) in request.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        quoted.push(format!("{name}: {value}"));
        received.insert(name.to_string(), Value::String(value));
    }
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::UNAUTHORIZED);
    (
        status,
        axum::Json(json!({
            "error": format!("credentials refused ({})", quoted.join("; ")),
            "received_headers": received,
        })),
    )
        .into_response()
}

/// Applies the fault dice; `Err` is the response to send instead of answering.
async fn faults(state: &MockState) -> Result<Decision, Response> {
    let (decision, delay, retry_after) = {
        let faults = state
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut rng = state.rng.lock().unwrap_or_else(|e| e.into_inner());
        (
            faults.decide(&mut rng),
            faults.delay(&mut rng),
            faults.retry_after_secs,
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match decision {
        Decision::Status(code) => {
            state.count_error();
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (
                status,
                axum::Json(json!({"error": format!("injected {code}")})),
            )
                .into_response();
            if let Some(secs) = retry_after
                && (code == 429 || code == 503)
            {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Err(response)
        }
        Decision::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Err(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        Decision::Malformed => {
            state.count(0);
            Err((StatusCode::OK, "{\"outputs\": [ this is not json").into_response())
        }
        d => Ok(d),
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message.into()})),
    )
        .into_response()
}

async fn metadata(State(state): State<Arc<MockState>>, Path(name): Path<String>) -> Response {
    let c = &state.config;
    let inputs: Vec<Value> = c
        .declared_inputs
        .iter()
        .map(|(n, d, s)| json!({"name": n, "datatype": d, "shape": s}))
        .collect();
    axum::Json(json!({
        "name": name,
        "versions": ["1"],
        "platform": "streamgate-mock",
        "inputs": inputs,
        "outputs": [{"name": c.output_name, "datatype": "FP64", "shape": [-1, c.output_width]}],
    }))
    .into_response()
}

async fn metadata_version(
    state: State<Arc<MockState>>,
    Path((name, _version)): Path<(String, String)>,
) -> Response {
    metadata(state, Path(name)).await
}

/// Why an OIP request's inputs are not rows the mock can score (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum RowsError {
    #[error("no `inputs` array")]
    NoInputs,
    #[error("input without shape")]
    NoShape,
    #[error("bad shape")]
    BadShape,
    #[error("empty shape")]
    EmptyShape,
    #[error("shape overflows")]
    ShapeOverflows,
    #[error("shape {shape:?} but {values} values")]
    DataLength { shape: Vec<usize>, values: usize },
    #[error("inputs disagree on the number of rows")]
    RowsDiffer,
    #[error("no inputs")]
    Empty,
}

/// Numeric values of each row of a set of OIP input tensors.
fn oip_rows(body: &Value) -> Result<Vec<Vec<f64>>, RowsError> {
    let inputs = body["inputs"].as_array().ok_or(RowsError::NoInputs)?;
    let mut rows: Option<Vec<Vec<f64>>> = None;
    for input in inputs {
        let shape: Vec<usize> = input["shape"]
            .as_array()
            .ok_or(RowsError::NoShape)?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize).ok_or(RowsError::BadShape))
            .collect::<Result<_, _>>()?;
        let n = *shape.first().ok_or(RowsError::EmptyShape)?;
        let width = shape
            .iter()
            .skip(1)
            .try_fold(1usize, |a, d| a.checked_mul(*d))
            .ok_or(RowsError::ShapeOverflows)?;
        let mut flat = Vec::new();
        flatten(&input["data"], &mut flat);
        // Checked before allocating rows: a shape is not trusted.
        if n.checked_mul(width) != Some(flat.len()) {
            return Err(RowsError::DataLength {
                shape,
                values: flat.len(),
            });
        }
        let rows = rows.get_or_insert_with(|| vec![Vec::new(); n]);
        if rows.len() != n {
            return Err(RowsError::RowsDiffer);
        }
        for (r, row) in rows.iter_mut().enumerate() {
            for v in &flat[r * width..(r + 1) * width] {
                row.push(v.as_f64().unwrap_or(0.0));
            }
        }
    }
    rows.ok_or(RowsError::Empty)
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

async fn oip(state: State<Arc<MockState>>, Path(name): Path<String>, body: Bytes) -> Response {
    oip_answer(&state, &name, &body).await
}

async fn oip_version(
    state: State<Arc<MockState>>,
    Path((name, _version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    oip_answer(&state, &name, &body).await
}

async fn oip_answer(state: &MockState, name: &str, body: &[u8]) -> Response {
    let decision = match faults(state).await {
        Ok(d) => d,
        Err(response) => return response,
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return bad_request("malformed JSON");
    };
    let rows = match oip_rows(&body) {
        Ok(r) => r,
        Err(m) => return bad_request(m.to_string()),
    };
    let poison = state.faults.lock().ok().and_then(|f| f.poison_status);
    if let Some(status) = poison
        && rows.iter().any(|r| r.first().is_some_and(|v| *v < 0.0))
    {
        state.count_error();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        return (
            status,
            axum::Json(json!({"error": "a row has a negative first input"})),
        )
            .into_response();
    }
    let mut n = rows.len();
    if decision == Decision::WrongRowCount && n > 0 {
        n -= 1;
    }
    state.count(n);
    let k = state.config.output_width.max(1);
    let data: Vec<f64> = rows[..n]
        .iter()
        .flat_map(|r| {
            let sum: f64 = r.iter().sum();
            (0..k).map(move |j| sum + j as f64)
        })
        .collect();
    axum::Json(json!({
        "model_name": name,
        "outputs": [{"name": state.config.output_name, "datatype": "FP64", "shape": [n, k], "data": data}],
    }))
    .into_response()
}

async fn chat(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    if let Err(response) = faults(&state).await {
        return response;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("malformed JSON");
    };
    let prompt = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .to_string();
    state.count(1);
    let first_word = prompt
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_lowercase();
    let answer = json!({"label": first_word, "chars": prompt.chars().count()}).to_string();
    let words = prompt.split_whitespace().count();
    if body["stream"] == json!(true) {
        return stream_chat(&body["model"], &answer);
    }
    axum::Json(json!({
        "id": "chatcmpl-mock",
        "created": 0,
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": words, "completion_tokens": 5, "total_tokens": words + 5},
    }))
    .into_response()
}

/// A streamed chat completion: the answer in chunks of a few characters as server-sent
/// events, then `[DONE]`, as OpenAI-compatible servers send them.
fn stream_chat(model: &Value, answer: &str) -> Response {
    let mut events = String::new();
    let chars: Vec<char> = answer.chars().collect();
    for (i, piece) in chars.chunks(8).enumerate() {
        let mut delta = json!({"content": piece.iter().collect::<String>()});
        if i == 0 {
            delta["role"] = json!("assistant");
        }
        let chunk = json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": null}],
        });
        events.push_str(&format!("data: {chunk}\n\n"));
    }
    let last = json!({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    });
    events.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        events,
    )
        .into_response()
}

async fn embeddings(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    if let Err(response) = faults(&state).await {
        return response;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("malformed JSON");
    };
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("").to_string())
            .collect(),
        _ => return bad_request("`input` must be a string or a list of strings"),
    };
    state.count(inputs.len());
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let first = s.bytes().next().unwrap_or(0) as f64;
            json!({"object": "embedding", "index": i, "embedding": [s.chars().count() as f64, first, 1.0]})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|s| s.split_whitespace().count()).sum();
    axum::Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
        .into_response()
}

fn numeric_sum(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Array(items) => items.iter().map(numeric_sum).sum(),
        Value::Object(map) => map.values().map(numeric_sum).sum(),
        _ => 0.0,
    }
}

async fn tf_predict(
    State(state): State<Arc<MockState>>,
    Path(name_predict): Path<String>,
    body: Bytes,
) -> Response {
    if !name_predict.ends_with(":predict") {
        return (StatusCode::NOT_FOUND, "only :predict is served").into_response();
    }
    let decision = match faults(&state).await {
        Ok(d) => d,
        Err(response) => return response,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("malformed JSON");
    };
    let Some(instances) = body["instances"].as_array() else {
        return bad_request("no `instances` array");
    };
    let mut predictions: Vec<Value> = instances.iter().map(|i| json!([numeric_sum(i)])).collect();
    if decision == Decision::WrongRowCount {
        predictions.pop();
    }
    state.count(predictions.len());
    axum::Json(json!({"predictions": predictions})).into_response()
}

async fn custom(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let decision = match faults(&state).await {
        Ok(d) => d,
        Err(response) => return response,
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("malformed JSON");
    };
    let Some(rows) = body["rows"].as_array() else {
        return bad_request("no `rows` array");
    };
    let mut results: Vec<Value> = rows
        .iter()
        .map(|r| json!({"score": numeric_sum(r)}))
        .collect();
    if decision == Decision::WrongRowCount {
        results.pop();
    }
    state.count(results.len());
    axum::Json(json!({"results": results})).into_response()
}
