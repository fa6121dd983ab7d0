//! Admin routes over HTTP: models with their weights and replica health, pipelines with
//! pause and resume, the audit log, the status page, and the changes (weights, rollback,
//! replicas) that [`crate::gateway::admin::Admin`] audits before making them.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::read_body;
use crate::gateway::Gateway;
use crate::gateway::admin::AdminError;
use crate::gateway::auth::Principal;
use crate::gateway::response::{error, not_found};
use crate::gateway::route_table::Handler;

/// The status page: plain HTML and JS, no build step, nothing fetched from elsewhere.
const STATUS_PAGE: &str = include_str!("../status.html");

/// Routes that only read: models, pipelines, audit entries, the status page.
pub(crate) fn read(handler: Handler, gateway: &Gateway) -> Response {
    match handler {
        Handler::AdminModels => models(gateway),
        Handler::AdminPipelines => match &gateway.pipelines {
            Some(p) => axum::Json(p.list()).into_response(),
            None => axum::Json(json!({ "pipelines": [] })).into_response(),
        },
        Handler::AdminAudit => {
            axum::Json(json!({ "entries": gateway.admin.entries() })).into_response()
        }
        Handler::StatusPage => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            STATUS_PAGE,
        )
            .into_response(),
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// Routes that change something, each audited under the caller's key name.
pub(crate) async fn change(
    handler: Handler,
    gateway: &Gateway,
    parts: &Parts,
    body: Body,
) -> Response {
    let who = parts
        .extensions
        .get::<Principal>()
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let path = parts.uri.path();
    match handler {
        Handler::SetReplicas => match read_body(gateway, body).await {
            Ok(body) => set_replicas(gateway, path, &who, &body).await,
            Err(response) => response,
        },
        Handler::PausePipeline | Handler::ResumePipeline => {
            set_paused(gateway, path, &who, handler == Handler::PausePipeline)
        }
        Handler::SetWeights => match read_body(gateway, body).await {
            Ok(body) => set_weights(gateway, path, &who, &body),
            Err(response) => response,
        },
        Handler::Rollback => {
            let model = admin_model(path);
            let result = gateway.admin.rollback(&gateway.registry, &who, &model);
            weights_changed(gateway, &model, result)
        }
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// `GET /admin/models`: every model's versions with their weights, and every replica's
/// in-flight calls, ejection and call and error counts.
fn models(gateway: &Gateway) -> Response {
    let now = std::time::Instant::now();
    let calls = gateway.metrics.models.calls_by_replica();
    let count = |m: &str, v: &str, r: &str| {
        calls
            .get(&(m.to_string(), v.to_string(), r.to_string()))
            .copied()
            .unwrap_or_default()
    };
    let models: Vec<Value> = gateway
        .registry
        .models()
        .map(|m| {
            let weights = m.router.weights();
            let versions: Vec<Value> = m
                .router
                .versions
                .iter()
                .zip(weights)
                .map(|(v, w)| {
                    let replicas: Vec<Value> = v
                        .balancer
                        .replicas()
                        .iter()
                        .map(|r| {
                            let calls = count(&m.name, &v.version, &r.address);
                            json!({
                                "address": &*r.address,
                                "in_flight": r.in_flight(),
                                "ejected": r.is_ejected(now),
                                "times_ejected": r.times_ejected(),
                                "calls": calls.ok + calls.failed,
                                "errors": calls.failed,
                            })
                        })
                        .collect();
                    let calls: u64 = replicas
                        .iter()
                        .map(|r| r["calls"].as_u64().unwrap_or(0))
                        .sum();
                    let errors: u64 = replicas
                        .iter()
                        .map(|r| r["errors"].as_u64().unwrap_or(0))
                        .sum();
                    json!({
                        "name": &*v.version,
                        "weight": w,
                        "calls": calls,
                        "errors": errors,
                        "replicas": replicas,
                    })
                })
                .collect();
            json!({ "name": &*m.name, "versions": versions })
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

/// `PUT /admin/models/{model}/weights` with `{"weights": {"<version>": <weight>}}`.
fn set_weights(gateway: &Gateway, path: &str, who: &str, body: &[u8]) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Weights {
        weights: BTreeMap<String, u32>,
    }
    let model = admin_model(path);
    let result = match serde_json::from_slice::<Weights>(body) {
        Ok(w) => gateway
            .admin
            .set_weights(&gateway.registry, who, &model, &w.weights),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"weights\": {{\"<version>\": <weight>}}}}: {e}"),
            );
        }
    };
    weights_changed(gateway, &model, result)
}

/// The answer to a weight change or rollback; a change made also reaches the pipelines.
fn weights_changed(gateway: &Gateway, model: &str, result: Result<Value, AdminError>) -> Response {
    match result {
        Ok(weights) => {
            propagate_weights(gateway, model);
            axum::Json(json!({ "model": model, "weights": weights })).into_response()
        }
        Err(e) => admin_error(e),
    }
}

/// `POST /admin/pipelines/{pipeline}/pause` and `.../resume`.
fn set_paused(gateway: &Gateway, path: &str, who: &str, paused: bool) -> Response {
    let pipeline = path_segment(path, "/admin/pipelines/");
    let Some(p) = &gateway.pipelines else {
        return error(StatusCode::NOT_FOUND, "no such pipeline");
    };
    match gateway.admin.set_paused(p.status(), who, &pipeline, paused) {
        Ok(paused) => axum::Json(json!({ "pipeline": pipeline, "paused": paused })).into_response(),
        Err(AdminError::NotFound) => error(StatusCode::NOT_FOUND, "no such pipeline"),
        Err(AdminError::Invalid(_, message) | AdminError::Audit(message)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, &message)
        }
    }
}

/// `PUT /admin/models/{model}/versions/{version}/replicas` with `{"replicas": [...]}`: every
/// URL is checked against the allow-list (and what it resolves to) before anything changes.
async fn set_replicas(gateway: &Gateway, path: &str, who: &str, body: &[u8]) -> Response {
    let model = admin_model(path);
    let version = path_segment(path, &format!("/admin/models/{model}/versions/"));
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Replicas {
        replicas: Vec<String>,
    }
    let replicas = match serde_json::from_slice::<Replicas>(body) {
        Ok(r) if !r.replicas.is_empty() && r.replicas.len() <= 64 => r.replicas,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "give 1 to 64 replicas"),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"replicas\": [\"http://host:port\"]}}: {e}"),
            );
        }
    };
    if gateway.replica_allow_list.is_empty() {
        return error(
            StatusCode::FORBIDDEN,
            "replicas cannot be changed through the API: the gateway file has no replica_allow_list",
        );
    }
    for url in &replicas {
        if let Err(e) = gateway.replica_allow_list.check(url).await {
            return error(StatusCode::FORBIDDEN, &e.to_string());
        }
    }
    let Some(spec) = gateway.specs.get(&model) else {
        return not_found();
    };
    match gateway.admin.set_replicas(
        &gateway.registry,
        who,
        &model,
        &version,
        &replicas,
        spec.max_in_flight_per_replica,
    ) {
        Ok(replicas) => {
            axum::Json(json!({ "model": model, "version": version, "replicas": replicas }))
                .into_response()
        }
        Err(e) => admin_error(e),
    }
}

/// The answer to a refused admin change.
fn admin_error(e: AdminError) -> Response {
    match e {
        AdminError::NotFound => not_found(),
        AdminError::Invalid(status, message) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            &message,
        ),
        AdminError::Audit(message) => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
    }
}

/// Applies a model's gateway weights to the same model in every pipeline of the process (by
/// version name), so a canary shift or rollback moves stream traffic too.
fn propagate_weights(gateway: &Gateway, model: &str) {
    let (Some(pipelines), Some(m)) = (&gateway.pipelines, gateway.registry.get(model)) else {
        return;
    };
    let weights: BTreeMap<&str, u32> = m
        .router
        .versions
        .iter()
        .map(|v| &*v.version)
        .zip(m.router.weights())
        .collect();
    for (pipeline, registry) in pipelines.status().registries() {
        let Some(theirs) = registry.get(model) else {
            continue;
        };
        let new: Option<Vec<u32>> = theirs
            .router
            .versions
            .iter()
            .map(|v| weights.get(&*v.version).copied())
            .collect();
        match new.map(|w| theirs.router.set_weights(w)) {
            Some(Ok(())) => tracing::info!(%pipeline, %model, "weights applied to the pipeline"),
            _ => {
                tracing::warn!(%pipeline, %model, "the pipeline's versions of the model differ from the gateway's; its weights are unchanged")
            }
        }
    }
}

/// The `{model}` of `/admin/models/{model}/...`.
fn admin_model(path: &str) -> String {
    path_segment(path, "/admin/models/")
}

/// The path segment right after `prefix`.
fn path_segment(path: &str, prefix: &str) -> String {
    path.strip_prefix(prefix)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_string()
}
