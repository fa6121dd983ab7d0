//! Environment interpolation into the model registry and inference steps (the [`Walker`] of
//! [`super::interpolate`], split out to keep each file to one part of the format).

use std::collections::BTreeMap;

use super::interpolate::Walker;
use super::{
    CustomJsonSpec, EndpointSpec, InferenceOutputSpec, InferenceStepSpec, ModelSpec, OipV2Spec,
    OnnxSpec, OpenAiChatSpec, OpenAiEmbeddingsSpec, Secret, TfServingSpec, TlsClientSpec,
    VersionSpec,
};

impl Walker<'_> {
    pub(super) fn inference_step(&mut self, path: &str, step: &mut InferenceStepSpec) {
        let InferenceStepSpec {
            name,
            model,
            inputs,
            outputs,
            sticky_key,
            lineage: _,
        } = step;
        self.string(&format!("{path}.name"), name);
        self.string(&format!("{path}.model"), model);
        for (i, input) in inputs.iter_mut().enumerate() {
            self.string(&format!("{path}.inputs[{i}]"), input);
        }
        for (i, output) in outputs.iter_mut().enumerate() {
            let InferenceOutputSpec {
                column,
                from,
                data_type: _,
            } = output;
            self.string(&format!("{path}.outputs[{i}].column"), column);
            self.string(&format!("{path}.outputs[{i}].from"), from);
        }
        self.opt_string(&format!("{path}.sticky_key"), sticky_key);
    }

    pub(super) fn models(&mut self, path: &str, models: &mut BTreeMap<String, ModelSpec>) {
        for (name, model) in models.iter_mut() {
            let path = format!("{path}.{name}");
            let ModelSpec {
                versions,
                fallback,
                timeout: _,
                deadline: _,
                retry: _,
                batching: _,
                balance: _,
                max_in_flight_per_replica: _,
                ejection: _,
            } = model;
            for (i, version) in versions.iter_mut().enumerate() {
                self.version(&format!("{path}.versions[{i}]"), version);
            }
            if let Some(fallback) = fallback {
                self.opt_string(&format!("{path}.fallback.model"), &mut fallback.model);
                self.opt_string(&format!("{path}.fallback.version"), &mut fallback.version);
            }
        }
    }

    /// An endpoint's `tls` file names and server name may come from the environment.
    fn endpoint_tls(&mut self, path: &str, tls: &mut Option<TlsClientSpec>) {
        let Some(TlsClientSpec {
            ca_file,
            client_cert,
            client_key,
            server_name,
        }) = tls
        else {
            return;
        };
        self.opt_string(&format!("{path}.tls.ca_file"), ca_file);
        self.opt_string(&format!("{path}.tls.client_cert"), client_cert);
        self.opt_string(&format!("{path}.tls.client_key"), client_key);
        self.opt_string(&format!("{path}.tls.server_name"), server_name);
    }

    fn version(&mut self, path: &str, version: &mut VersionSpec) {
        let VersionSpec {
            name,
            weight: _,
            endpoint,
            oip_outputs,
        } = version;
        self.string(&format!("{path}.name"), name);
        for (i, o) in oip_outputs.iter_mut().enumerate() {
            self.string(&format!("{path}.oip_outputs[{i}].column"), &mut o.column);
            self.string(&format!("{path}.oip_outputs[{i}].from"), &mut o.from);
        }
        let path = format!("{path}.endpoint");
        match endpoint {
            EndpointSpec::OipV2(OipV2Spec {
                replicas,
                model_name,
                model_version,
                layout: _,
                request_outputs,
                headers,
                tls,
            }) => {
                self.replicas(&path, replicas);
                self.endpoint_tls(&path, tls);
                self.opt_string(&format!("{path}.model_name"), model_name);
                self.opt_string(&format!("{path}.model_version"), model_version);
                for (i, o) in request_outputs.iter_mut().enumerate() {
                    self.string(&format!("{path}.request_outputs[{i}]"), o);
                }
                self.headers(&path, headers);
            }
            EndpointSpec::OpenaiChat(OpenAiChatSpec {
                replicas,
                model,
                prompt,
                system,
                json_answer: _,
                max_tokens: _,
                temperature: _,
                api_key,
                tls,
            }) => {
                self.replicas(&path, replicas);
                self.endpoint_tls(&path, tls);
                self.string(&format!("{path}.model"), model);
                self.string(&format!("{path}.prompt"), prompt);
                self.opt_string(&format!("{path}.system"), system);
                self.opt_secret(&format!("{path}.api_key"), api_key);
            }
            EndpointSpec::OpenaiEmbeddings(OpenAiEmbeddingsSpec {
                replicas,
                model,
                api_key,
                tls,
            }) => {
                self.replicas(&path, replicas);
                self.endpoint_tls(&path, tls);
                self.string(&format!("{path}.model"), model);
                self.opt_secret(&format!("{path}.api_key"), api_key);
            }
            EndpointSpec::TfServing(TfServingSpec {
                replicas,
                model_name,
                signature_name,
                named_inputs: _,
                tls,
            }) => {
                self.replicas(&path, replicas);
                self.endpoint_tls(&path, tls);
                self.opt_string(&format!("{path}.model_name"), model_name);
                self.opt_string(&format!("{path}.signature_name"), signature_name);
            }
            EndpointSpec::CustomJson(CustomJsonSpec {
                replicas,
                path: request_path,
                body: _,
                results_pointer,
                headers,
                tls,
            }) => {
                self.replicas(&path, replicas);
                self.endpoint_tls(&path, tls);
                self.string(&format!("{path}.path"), request_path);
                self.string(&format!("{path}.results_pointer"), results_pointer);
                self.headers(&path, headers);
            }
            EndpointSpec::Onnx(OnnxSpec {
                repository,
                model_name,
                layout: _,
            }) => {
                self.string(&format!("{path}.repository"), repository);
                self.opt_string(&format!("{path}.model_name"), model_name);
            }
        }
    }

    fn replicas(&mut self, path: &str, replicas: &mut [String]) {
        for (i, replica) in replicas.iter_mut().enumerate() {
            self.string(&format!("{path}.replicas[{i}]"), replica);
        }
    }

    fn headers(&mut self, path: &str, headers: &mut BTreeMap<String, Secret>) {
        for (name, value) in headers.iter_mut() {
            self.secret(&format!("{path}.headers[{name:?}]"), value);
        }
    }

    fn opt_secret(&mut self, path: &str, secret: &mut Option<Secret>) {
        if let Some(secret) = secret {
            self.secret(path, secret);
        }
    }
}
