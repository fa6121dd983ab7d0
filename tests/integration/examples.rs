//! Every example pipeline in `pipelines/` loads and compiles (SQL planned against its schema),
//! and `docker-compose.yml` parses and references files that exist.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn every_example_pipeline_validates() {
    let mut count = 0;
    for entry in std::fs::read_dir(root().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let loaded = streamgate::spec::load_file(&path)
            .unwrap_or_else(|e| panic!("{} does not load:\n{e}", path.display()));
        streamgate::plan::compile(loaded)
            .await
            .unwrap_or_else(|e| panic!("{} does not compile:\n{e}", path.display()));
        count += 1;
    }
    assert!(count >= 1, "no example pipelines found");
}

#[test]
fn the_example_gateway_file_loads_and_builds() {
    let loaded = streamgate::spec::load_gateway(&root().join("models/gateway.yaml"))
        .unwrap_or_else(|e| panic!("models/gateway.yaml does not load:\n{e}"));
    assert!(loaded.spec.models.contains_key("fraud"));
    streamgate::gateway::Gateway::new(
        &loaded.spec,
        loaded.base_dir(),
        streamgate::telemetry::Metrics::new(),
    )
    .unwrap();
}

#[test]
fn docker_compose_parses_and_references_existing_files() {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let services = doc["services"].as_mapping().expect("services");
    for required in ["kafka", "nats", "prometheus", "streamgate"] {
        assert!(
            services.contains_key(required),
            "docker-compose.yml has no {required} service"
        );
    }
    // Every bind-mounted host path and build context must exist in the repository.
    let mut checked = 0;
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let Some(spec) = volume.as_str() else {
                continue;
            };
            let host = spec.split(':').next().unwrap();
            if host.starts_with("./") {
                assert!(
                    root().join(host).exists(),
                    "{name:?}: {host} does not exist"
                );
                checked += 1;
            }
        }
        if let Some(context) = service["build"]["context"].as_str() {
            assert!(
                root().join(context).exists(),
                "{name:?}: build context {context}"
            );
            let dockerfile = service["build"]["dockerfile"]
                .as_str()
                .unwrap_or("Dockerfile");
            assert!(
                root().join(context).join(dockerfile).exists(),
                "{name:?}: {dockerfile}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no file references were checked");
}
