//! The model registry: builds protocol backends from the spec (loading in-process models once,
//! at compile time) and, at run time, the models: their routers and fallbacks, and each
//! version's client over its replicas (whose layers [`super::layers::stack`] composes).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::balance::{Balancer, Replica};
use super::model::{Fallback, Model, Router, VersionClient};
use super::onnx::{OnnxBackend, OnnxRunner};
use super::protocol::Backend;
use super::protocol::custom_json::CustomJsonBackend;
use super::protocol::http_json::{HttpJsonBackend, JsonProtocol};
use super::protocol::oip::OipBackend;
use super::protocol::openai::{ChatBackend, EmbeddingsBackend};
use super::protocol::scrubbed::scrubbed;
use super::protocol::tf_serving::TfServingBackend;
use super::protocol::transport::Upstream;
use super::scrub::SecretScrubber;
use super::types::{BatchingPolicy, CallPolicy};
use crate::spec::{EndpointSpec, ModelSpec};
use crate::telemetry::ModelMetrics;

/// Address reported for in-process models (lineage, metrics).
pub(crate) const IN_PROCESS: &str = "in-process";

/// A prepared backend of one version, with its replica addresses.
#[derive(Clone)]
pub struct PreparedVersion {
    /// The protocol client.
    pub backend: Arc<dyn Backend>,
    /// Replica addresses (one pseudo-replica for in-process models).
    pub replicas: Vec<String>,
    /// The loaded ONNX model, for contract checks.
    pub onnx: Option<Arc<OnnxBackend>>,
}

/// Backends of every model version, by model then version name.
pub type PreparedBackends = BTreeMap<String, BTreeMap<String, PreparedVersion>>;

/// Creates the backends of every model; loads ONNX files relative to `base_dir`. Errors carry
/// the spec path (`models.fraud.versions[0].endpoint`).
pub(crate) fn prepare(
    models: &BTreeMap<String, ModelSpec>,
    base_dir: &Path,
) -> Result<PreparedBackends, Vec<(String, String)>> {
    let mut prepared = PreparedBackends::new();
    let mut errors = Vec::new();
    for (name, model) in models {
        let versions = prepared.entry(name.clone()).or_default();
        for (i, version) in model.versions.iter().enumerate() {
            let endpoint = &version.endpoint;
            // Errors of a version that sends secrets are scrubbed of them (a backend may
            // echo its API key in an error body); other versions are not wrapped.
            let http = |backend: Arc<dyn Backend>, replicas: &[String]| PreparedVersion {
                backend: scrubbed(backend, SecretScrubber::for_endpoint(endpoint)),
                replicas: replicas.to_vec(),
                onnx: None,
            };
            // A version with `tls` settings gets an HTTP client (and pool) of its own.
            let upstream = match endpoint.tls() {
                None => Upstream::shared(),
                Some(tls) => match Upstream::with_tls(&tls.options("tls", base_dir)) {
                    Ok(upstream) => upstream,
                    Err(e) => {
                        errors.push((
                            format!("models.{name}.versions[{i}].endpoint"),
                            e.to_string(),
                        ));
                        continue;
                    }
                },
            };
            let u = &upstream;
            let v = match endpoint {
                EndpointSpec::OipV2(s) => http(json(OipBackend::new(s, name), u), &s.replicas),
                EndpointSpec::OpenaiChat(s) => http(json(ChatBackend::new(s), u), &s.replicas),
                EndpointSpec::OpenaiEmbeddings(s) => {
                    http(json(EmbeddingsBackend::new(s), u), &s.replicas)
                }
                EndpointSpec::TfServing(s) => {
                    http(json(TfServingBackend::new(s, name), u), &s.replicas)
                }
                EndpointSpec::CustomJson(s) => {
                    http(json(CustomJsonBackend::new(s), u), &s.replicas)
                }
                EndpointSpec::Onnx(s) => {
                    match OnnxBackend::load(s, name, &version.name, base_dir) {
                        Ok(model) => {
                            let model = Arc::new(model);
                            PreparedVersion {
                                backend: Arc::new(OnnxRunner::new(model.clone())),
                                replicas: vec![IN_PROCESS.to_string()],
                                onnx: Some(model),
                            }
                        }
                        Err(e) => {
                            errors.push((
                                format!("models.{name}.versions[{i}].endpoint.repository"),
                                e.to_string(),
                            ));
                            continue;
                        }
                    }
                }
            };
            versions.insert(version.name.clone(), v);
        }
    }
    if errors.is_empty() {
        Ok(prepared)
    } else {
        Err(errors)
    }
}

/// The HTTP-JSON backend speaking `protocol` through `upstream`.
fn json(protocol: impl JsonProtocol + 'static, upstream: &Upstream) -> Arc<dyn Backend> {
    Arc::new(HttpJsonBackend::new(protocol, upstream.clone()))
}

/// Run-time models by name.
pub struct ModelRegistry {
    models: BTreeMap<String, Arc<Model>>,
}

impl ModelRegistry {
    /// Builds clients, balancers and budgets over prepared backends. The spec is validated, so
    /// every fallback target exists.
    pub fn build(
        specs: &BTreeMap<String, ModelSpec>,
        prepared: &PreparedBackends,
        metrics: &ModelMetrics,
    ) -> Arc<ModelRegistry> {
        let mut routers: BTreeMap<&str, (Arc<Router>, Arc<CallPolicy>)> = BTreeMap::new();
        for (name, spec) in specs {
            let policy = Arc::new(CallPolicy {
                timeout: spec.timeout,
                deadline: spec.deadline,
                retry: spec.retry.clone(),
                ejection: spec.ejection.clone(),
            });
            let mut clients = Vec::new();
            let mut weights = Vec::new();
            for version in &spec.versions {
                let Some(p) = prepared.get(name).and_then(|v| v.get(&version.name)) else {
                    continue;
                };
                let replicas = p
                    .replicas
                    .iter()
                    .map(|address| {
                        let labels = [name.as_str(), version.name.as_str(), address.as_str()];
                        let replica = Replica::new(
                            address,
                            spec.max_in_flight_per_replica,
                            metrics.in_flight.with_label_values(&labels),
                            metrics.ejections.with_label_values(&labels),
                        );
                        // There is no other copy of an in-process model to fail over to.
                        Arc::new(if address == IN_PROCESS {
                            replica.never_ejected()
                        } else {
                            replica
                        })
                    })
                    .collect();
                clients.push(Arc::new(VersionClient::new(
                    name,
                    &version.name,
                    p.backend.clone(),
                    Balancer::new(replicas, spec.balance),
                    policy.clone(),
                    metrics.clone(),
                )));
                weights.push(version.weight);
            }
            routers.insert(name, (Arc::new(Router::new(clients, weights)), policy));
        }
        let mut models = BTreeMap::new();
        for (name, spec) in specs {
            let (router, policy) = routers[name.as_str()].clone();
            let fallback = spec.fallback.as_ref().and_then(|f| {
                let target = f.model.as_deref().unwrap_or(name);
                let (target_router, _) = routers.get(target)?;
                match &f.version {
                    Some(v) => target_router
                        .versions
                        .iter()
                        .find(|c| &*c.version == v)
                        .map(|c| Fallback::Version(c.clone())),
                    None => Some(Fallback::Router(target_router.clone())),
                }
            });
            models.insert(
                name.clone(),
                Arc::new(Model {
                    name: Arc::from(name.as_str()),
                    router,
                    fallback,
                    policy,
                    batching: BatchingPolicy::from_spec(&spec.batching),
                    metrics: metrics.clone(),
                }),
            );
        }
        Arc::new(ModelRegistry { models })
    }

    /// A model by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name)
    }

    /// All models.
    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }
}
