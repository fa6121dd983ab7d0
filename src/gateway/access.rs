//! Who may call a route, and whether the gateway admits the call now: authentication by API
//! key or JWT, authorization by the route's [`Policy`], per-key rate and concurrency limits
//! and load shedding for inference, and the refusals that answer when any of them says no.
//! Every request is counted and logged here, admitted or not.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tokio::sync::OwnedSemaphorePermit;

use super::auth::{self, Policy, Principal, Refusal};
use super::response::{error, refusal};
use super::route_table::{Handler, Listener, RouteDef};
use super::{Gateway, Shared, held_body};

/// What a listener requires of a route's callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The route's policy, checked against the gateway's keys (or none, when public).
    Policy(Policy),
    /// Refused to everyone, with the reason.
    Refused(&'static str),
}

/// Why a change through an admin port without keys is refused.
const NO_KEYS_FOR_CHANGES: &str = "changes through the admin port need an `admin:write` key, \
and this admin port has no keys: start `streamgate run` with --admin-auth FILE (API keys or \
JWT, as in a gateway file's `auth`)";

/// The access a listener gives a route. The gateway's listener applies the table's policy.
/// The admin port applies it too once it has keys (`auth_configured`), except for the health
/// and metrics routes [`AdminAccess`] opens. Without keys, which only a loopback admin port may
/// run (see [`crate::gateway::serve_admin`]), it is for local use: reading is open, changing
/// is refused, since anything on the machine (a web page in a browser, too) could send the
/// request.
pub(crate) fn on_listener(def: &RouteDef, listener: &Listener, auth_configured: bool) -> Access {
    let Listener::AdminPort(open) = listener else {
        return Access::Policy(def.policy);
    };
    let opened = match def.handler {
        Handler::Healthz | Handler::Readyz => open.public_health,
        Handler::Metrics => open.public_metrics,
        _ => false,
    };
    match def.policy {
        _ if opened => Access::Policy(Policy::Public),
        policy if auth_configured => Access::Policy(policy),
        Policy::AdminWrite => Access::Refused(NO_KEYS_FOR_CHANGES),
        _ => Access::Policy(Policy::Public),
    }
}

/// Authentication for every protected route, and authorization where the model is in the
/// path. Routes that name the model in the body check the scope in the handler, before any
/// upstream work, with the [`Principal`] stored here. Every request is counted and logged.
pub(crate) async fn authorize(
    route: &'static str,
    access: Access,
    State(gateway): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let (response, who) = match access {
        Access::Policy(policy) => admit(policy, &gateway, request, next).await,
        Access::Refused(reason) => (error(StatusCode::FORBIDDEN, reason), None),
    };
    let status = response.status();
    gateway
        .metrics
        .gateway
        .observe(route, status, started.elapsed());
    tracing::info!(
        target: "streamgate::access",
        route,
        status = status.as_u16(),
        who = who.as_deref().unwrap_or("-"),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// Runs the handler when the credential allows it and the limits admit it. Returns the
/// response and the credential's name.
async fn admit(
    policy: Policy,
    gateway: &Gateway,
    mut request: Request,
    next: Next,
) -> (Response, Option<Arc<str>>) {
    if policy == Policy::Public {
        return (next.run(request).await, None);
    }
    let principal = match gateway.keys.authenticate(request.headers()) {
        Ok(p) => p,
        Err(r) => return (refusal(r), None),
    };
    let who = Some(principal.name.clone());
    let path_model = model_in_path(request.uri().path());
    let body_routed = path_model.is_none() && policy == Policy::Infer;
    if !body_routed && !principal.allows(policy, path_model.as_deref()) {
        return (refusal(Refusal::Forbidden), who);
    }
    // Limits apply to inference only: admin, health and metrics stay available under load.
    let held = if policy == Policy::Infer {
        match take_inference_slots(gateway, &principal) {
            Ok(held) => held,
            Err(shed) => return (too_many(shed.status, shed.message, shed.wait), who),
        }
    } else {
        Vec::new()
    };
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    if held.is_empty() {
        return (response, who);
    }
    // The slots are held until the body is sent: a streamed answer is still in flight.
    let (parts, body) = response.into_parts();
    let body = Body::new(held_body::HeldBody::new(body, held));
    (Response::from_parts(parts, body), who)
}

/// Why an inference request is not admitted now: answered at once with `Retry-After`.
struct Shed {
    status: StatusCode,
    message: &'static str,
    wait: Duration,
}

/// The key's rate token, its concurrency slot (if it has a limit) and a gateway-wide slot,
/// or why not (429 for the key's limits, 503 when the gateway is at capacity).
fn take_inference_slots(
    gateway: &Gateway,
    principal: &Principal,
) -> Result<Vec<OwnedSemaphorePermit>, Shed> {
    if let Err(wait) = principal.limits.take_token() {
        return Err(Shed {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "the API key's rate limit is reached",
            wait,
        });
    }
    let mut held = Vec::new();
    match principal.limits.slot() {
        Ok(slot) => held.extend(slot),
        Err(auth::AllTaken) => {
            return Err(Shed {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "the API key's concurrency limit is reached",
                wait: Duration::from_secs(1),
            });
        }
    }
    match gateway.infer_slots.clone().try_acquire_owned() {
        Ok(slot) => held.push(slot),
        Err(_) => {
            return Err(Shed {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "the gateway is at capacity",
                wait: Duration::from_secs(1),
            });
        }
    }
    Ok(held)
}

/// A fast refusal under load, with `Retry-After` in whole seconds (at least 1).
fn too_many(status: StatusCode, message: &str, wait: Duration) -> Response {
    let mut response = error(status, message);
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(value) = seconds.to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The `{model}` of a `/v2/models/{model}/...` path.
fn model_in_path(path: &str) -> Option<String> {
    path.strip_prefix("/v2/models/")
        .and_then(|rest| rest.split('/').next())
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::route_table::{AdminAccess, ROUTES};

    fn route(path: &str, method: &str) -> &'static RouteDef {
        ROUTES
            .iter()
            .find(|r| r.path == path && r.method == method)
            .expect("a route of the table")
    }

    #[test]
    fn the_admin_port_opens_health_and_metrics_only_as_configured() {
        let pause = route("/admin/pipelines/{pipeline}/pause", "POST");
        let metrics = route("/metrics", "GET");
        let healthz = route("/healthz", "GET");
        let states = route("/pipelines", "GET");
        let open = Listener::AdminPort(AdminAccess {
            public_health: true,
            public_metrics: true,
        });
        let closed = Listener::AdminPort(AdminAccess {
            public_health: false,
            public_metrics: false,
        });
        let public = Access::Policy(Policy::Public);
        // With keys: the table's policy, unless opened.
        assert_eq!(
            on_listener(pause, &open, true),
            Access::Policy(Policy::AdminWrite)
        );
        assert_eq!(on_listener(metrics, &open, true), public);
        assert_eq!(on_listener(healthz, &open, true), public);
        assert_eq!(
            on_listener(metrics, &closed, true),
            Access::Policy(Policy::AdminRead)
        );
        assert_eq!(
            on_listener(healthz, &closed, true),
            Access::Policy(Policy::Authenticated)
        );
        // Without keys (loopback only): reads open, changes refused with the option named.
        assert_eq!(on_listener(states, &closed, false), public);
        let Access::Refused(reason) = on_listener(pause, &closed, false) else {
            panic!("a change without keys is refused");
        };
        assert!(reason.contains("--admin-auth"), "{reason}");
        // The gateway's listener keeps the table's policies, keys or not.
        assert_eq!(
            on_listener(metrics, &Listener::Gateway, false),
            Access::Policy(Policy::AdminRead)
        );
        assert_eq!(
            on_listener(pause, &Listener::Gateway, false),
            Access::Policy(Policy::AdminWrite)
        );
    }
}
