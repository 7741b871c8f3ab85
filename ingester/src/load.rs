//! Loading the ingester configuration: the rendered config (JSON or YAML, as the operator
//! writes it) or a KafkaTable manifest, from which it is derived the same way.

use std::collections::HashMap;
use std::path::Path;

use kafkatable_crds::config::StorageConfig;
use kafkatable_crds::{IngesterConfig, KafkaTable};

use crate::error::IngesterError;
use crate::source::read_secret;

/// Reads `path` as an ingester config, or else as a KafkaTable manifest.
pub fn config_file(path: &Path, secrets_dir: &Path) -> Result<IngesterConfig, IngesterError> {
    let text = std::fs::read_to_string(path).map_err(|source| IngesterError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, secrets_dir).map_err(|reason| match reason {
        Parse::Config(e) => IngesterError::Config(e),
        Parse::Neither(reason) => IngesterError::ParseConfig {
            path: path.to_path_buf(),
            reason,
        },
    })
}

enum Parse {
    Config(kafkatable_crds::config::ConfigError),
    Neither(String),
}

fn parse(text: &str, secrets_dir: &Path) -> Result<IngesterConfig, Parse> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| Parse::Neither(e.to_string()))?;
    if value.get("kind").and_then(|k| k.as_str()) == Some("KafkaTable") {
        let kt: KafkaTable = serde_yaml::from_value(value)
            .map_err(|e| Parse::Neither(format!("as a KafkaTable: {e}")))?;
        return IngesterConfig::from_resource(&kt, secrets_dir).map_err(Parse::Config);
    }
    let mut config: IngesterConfig = serde_yaml::from_value(value)
        .map_err(|e| Parse::Neither(format!("as an ingester config: {e}")))?;
    config.resolve_secret_files(secrets_dir);
    config.check_implemented().map_err(Parse::Config)?;
    Ok(config)
}

/// Object store options for deltalake from the storage settings (credentials read from their
/// files).
pub fn storage_options(storage: &StorageConfig) -> Result<HashMap<String, String>, IngesterError> {
    let mut options = HashMap::new();
    if let Some(endpoint) = &storage.endpoint {
        options.insert("AWS_ENDPOINT_URL".to_string(), endpoint.clone());
    }
    if let Some(region) = &storage.region {
        options.insert("AWS_REGION".to_string(), region.clone());
    }
    if storage.allow_http {
        options.insert("AWS_ALLOW_HTTP".to_string(), "true".to_string());
    }
    if !storage.path_style && storage.endpoint.is_some() {
        options.insert(
            "AWS_VIRTUAL_HOSTED_STYLE_REQUEST".to_string(),
            "true".to_string(),
        );
    }
    if let Some(file) = &storage.access_key_id_file {
        options.insert("AWS_ACCESS_KEY_ID".to_string(), read_secret(file)?);
    }
    if let Some(file) = &storage.secret_access_key_file {
        options.insert("AWS_SECRET_ACCESS_KEY".to_string(), read_secret(file)?);
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_and_its_rendered_config_load_the_same() {
        let manifest = r#"
apiVersion: kafkatable.io/v1alpha1
kind: KafkaTable
metadata: {name: t, namespace: n}
spec:
  source: {brokers: "k:9092", topic: events}
  table: {format: delta, location: "file:///tmp/t"}
"#;
        let Ok(from_manifest) = parse(manifest, Path::new("/s")) else {
            panic!("manifest parses")
        };
        let rendered = serde_json::to_string(&from_manifest).expect("render");
        let Ok(from_rendered) = parse(&rendered, Path::new("/s")) else {
            panic!("rendered config parses")
        };
        assert_eq!(from_manifest, from_rendered);
        // The operator renders Secret files relative to the secrets dir; they land under it.
        let kt: KafkaTable = serde_yaml::from_str(&manifest.replace(
            "location: \"file:///tmp/t\"}",
            "location: \"s3://b/t\", storage: {credentialsSecretRef: {name: s3}}}",
        ))
        .expect("manifest");
        let relative = IngesterConfig::from_resource(&kt, Path::new("")).expect("config");
        let rendered = serde_json::to_string(&relative).expect("render");
        let Ok(loaded) = parse(&rendered, Path::new("/s")) else {
            panic!("rendered config parses")
        };
        assert_eq!(
            loaded.table.storage.access_key_id_file,
            Some("/s/s3/accessKeyId".into())
        );
        assert!(matches!(
            parse("kind: Deployment\nspec: {}\n", Path::new("/s")),
            Err(Parse::Neither(_))
        ));
    }
}
