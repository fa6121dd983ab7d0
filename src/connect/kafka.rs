//! Kafka client configuration shared by the Kafka source and sink: bootstrap servers, security
//! and user properties, applied in that order so that explicit settings win over defaults and
//! the delivery-critical ones are set last.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::spec::{KafkaSecurity, SaslMechanism, SecurityProtocol};

/// Builds a client configuration. `defaults` come first so user `properties` override them;
/// `enforced` come last because the delivery guarantee depends on them.
pub fn client_config(
    bootstrap_servers: &str,
    security: Option<&KafkaSecurity>,
    defaults: &[(&str, &str)],
    properties: &BTreeMap<String, String>,
    enforced: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap_servers);
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    if let Some(security) = security {
        apply_security(&mut config, security);
    }
    for (k, v) in properties {
        config.set(k, v);
    }
    for (k, v) in enforced {
        config.set(*k, *v);
    }
    // librdkafka logs go through the `log` facade of rdkafka; keep them out of the way of ours.
    config.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    config
}

fn apply_security(config: &mut ClientConfig, security: &KafkaSecurity) {
    let protocol = match security.protocol {
        SecurityProtocol::Plaintext => "plaintext",
        SecurityProtocol::Ssl => "ssl",
        SecurityProtocol::SaslPlaintext => "sasl_plaintext",
        SecurityProtocol::SaslSsl => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if let Some(tls) = &security.tls {
        if let Some(ca) = &tls.ca_file {
            config.set("ssl.ca.location", ca);
        }
        if let Some(cert) = &tls.cert_file {
            config.set("ssl.certificate.location", cert);
        }
        if let Some(key) = &tls.key_file {
            config.set("ssl.key.location", key);
        }
        if let Some(password) = &tls.key_password {
            config.set("ssl.key.password", password.expose());
        }
        config.set(
            "ssl.endpoint.identification.algorithm",
            if tls.verify_hostname { "https" } else { "none" },
        );
    }
    if let Some(sasl) = &security.sasl {
        let mechanism = match sasl.mechanism {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        };
        config.set("sasl.mechanism", mechanism);
        config.set("sasl.username", &sasl.username);
        config.set("sasl.password", sasl.password.expose());
    }
}

/// Why the source's topics could not be confirmed.
#[derive(Debug, thiserror::Error)]
pub enum TopicCheckError {
    /// The client cannot be created from the settings.
    #[error(transparent)]
    Client(rdkafka::error::KafkaError),
    /// The brokers did not answer.
    #[error("cannot reach brokers {servers}: {source}{}", .why.as_deref().map(|w| format!(": {w}")).unwrap_or_default())]
    Unreachable {
        /// The bootstrap servers.
        servers: String,
        /// The metadata request's error.
        #[source]
        source: rdkafka::error::KafkaError,
        /// The last connection failure librdkafka reported (a refused password, an untrusted
        /// certificate), which says why.
        why: Option<String>,
    },
    /// Topics the brokers do not have.
    #[error("topics not found on {servers}: {}", .topics.join(", "))]
    Missing {
        /// The bootstrap servers.
        servers: String,
        /// The missing topics.
        topics: Vec<String>,
    },
    /// The checking task failed.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// Connects with the source's settings and checks that every source topic exists.
pub async fn check_topics(
    spec: &crate::spec::KafkaSourceSpec,
    timeout: std::time::Duration,
) -> Result<(), TopicCheckError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let config = client_config(
        &spec.bootstrap_servers,
        spec.security.as_ref(),
        &[],
        &spec.properties,
        &[("group.id", &spec.group_id)],
    );
    let topics = spec.topics.clone();
    let servers = spec.bootstrap_servers.clone();
    // One check at start-up: the size of its error does not matter.
    #[allow(clippy::result_large_err)]
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<CheckContext> = config
            .create_with_context(CheckContext::default())
            .map_err(TopicCheckError::Client)?;
        let metadata = consumer.fetch_metadata(None, timeout).map_err(|source| {
            // librdkafka queues its logs and errors; serve them to learn why.
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                let _ = consumer.poll(left);
            }
            TopicCheckError::Unreachable {
                servers: servers.clone(),
                source,
                why: consumer.context().last_failure(),
            }
        })?;
        let missing: Vec<_> = topics
            .iter()
            .filter(|t| {
                !metadata
                    .topics()
                    .iter()
                    .any(|m| m.name() == t.as_str() && m.error().is_none())
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TopicCheckError::Missing {
                servers,
                topics: missing,
            })
        }
    })
    .await?
}

/// Client context of [`check_topics`]: remembers the last connection failure librdkafka
/// logged or reported (a refused password, an untrusted or missing certificate, a refused
/// connection),
/// which says why the brokers cannot be reached; the metadata request itself only fails with
/// "broker transport failure". librdkafka never puts a password in these messages.
#[derive(Default)]
struct CheckContext {
    last_failure: std::sync::Mutex<Option<String>>,
}

impl CheckContext {
    fn last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl rdkafka::ClientContext for CheckContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "FAIL" {
            // "[thrd:sasl_ssl://host:port/bootstrap]: sasl_ssl://host:port/bootstrap: why"
            let why = match message.strip_prefix("[thrd:") {
                Some(rest) => rest.split_once("]: ").map_or(message, |(_, why)| why),
                None => message,
            };
            *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
        }
        rdkafka::client::DefaultClientContext.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let mut last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none() {
            *last = Some(reason.to_string());
        }
        drop(last);
        rdkafka::client::DefaultClientContext.error(error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for CheckContext {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{SaslSpec, Secret};

    #[test]
    fn enforced_settings_win_over_user_properties() {
        let mut props = BTreeMap::new();
        props.insert("enable.idempotence".to_string(), "false".to_string());
        props.insert("linger.ms".to_string(), "7".to_string());
        let c = client_config(
            "b:9092",
            None,
            &[("linger.ms", "5")],
            &props,
            &[("enable.idempotence", "true")],
        );
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("linger.ms"), Some("7"));
    }

    #[test]
    fn a_connection_check_remembers_why_the_brokers_refused() {
        use rdkafka::ClientContext;
        use rdkafka::config::RDKafkaLogLevel;
        let context = CheckContext::default();
        context.log(RDKafkaLogLevel::Warning, "REQTMOUT", "timed out");
        assert_eq!(context.last_failure(), None);
        context.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "[thrd:sasl_ssl://b:9093/bootstrap]: sasl_ssl://b:9093/bootstrap: SASL \
             authentication error: Authentication failed",
        );
        assert_eq!(
            context.last_failure().as_deref(),
            Some("sasl_ssl://b:9093/bootstrap: SASL authentication error: Authentication failed")
        );
    }

    #[test]
    fn sasl_settings_map_to_librdkafka_names() {
        let security = KafkaSecurity {
            protocol: SecurityProtocol::SaslSsl,
            tls: None,
            sasl: Some(SaslSpec {
                mechanism: SaslMechanism::ScramSha512,
                username: "svc".into(),
                password: Secret::new("pw-canary"),
            }),
        };
        let c = client_config("b:9092", Some(&security), &[], &BTreeMap::new(), &[]);
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.password"), Some("pw-canary"));
    }
}
