//! The addresses and credentials of the running infrastructure, read from the env file that
//! `e2e/tools/infra.sh up` writes (`$KAFKATABLE_RUN/env`). Variables already set in the
//! process environment win, so a test can point at other servers.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the infrastructure is; every field comes from one `KT_*` variable.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Kubeconfig of the test cluster (admin).
    pub kubeconfig: PathBuf,
    /// kubectl built for the test cluster's version.
    pub kubectl: PathBuf,
    /// helm.
    pub helm: PathBuf,
    /// The classpath of the Kafka distribution (to start a broker of a test's own).
    pub kafka_classpath: String,
    /// Kafka PLAINTEXT bootstrap address.
    pub kafka_bootstrap: String,
    /// Kafka SASL_PLAINTEXT (SCRAM) bootstrap address.
    pub kafka_sasl_bootstrap: String,
    /// SCRAM user and password known to the broker.
    pub kafka_sasl_username: String,
    pub kafka_sasl_password: String,
    /// The broker's TLS listener, the CA that signed its certificate, and a CA that did not.
    pub kafka_tls_bootstrap: String,
    pub kafka_tls_ca: PathBuf,
    pub kafka_tls_other_ca: PathBuf,
    /// S3 endpoint (MinIO) and credentials.
    pub s3_endpoint: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    pub s3_region: String,
    /// The MinIO binary (for tests that run a server of their own).
    pub minio_bin: PathBuf,
    /// Iceberg REST catalog URI and its warehouse.
    pub iceberg_rest_uri: String,
    pub iceberg_warehouse: String,
    /// Confluent-compatible schema registry base URL.
    pub registry_url: String,
    /// A Java 21+ binary and Apicurio's jar, for a test's own registry.
    pub registry_java: PathBuf,
    pub registry_jar: PathBuf,
    /// Python of the venv with deltalake, pyiceberg, polars, duckdb, confluent-kafka.
    pub python: PathBuf,
    /// Run directory of the infrastructure (logs, pod dirs).
    pub run_dir: PathBuf,
    /// The OCI archives the process kubelet runs pods from (`images.sh test`).
    pub images: PathBuf,
    /// kt-health: kstatus and Argo CD's Lua VM over KafkaTable objects (go-tools.sh).
    pub health: PathBuf,
}

/// The env file could not be read or lacks a variable.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("cannot read {path}: {source} (start the infrastructure with `make infra-up`)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{name} is not set in the environment nor in {path} (start the infrastructure with `make infra-up`)"
    )]
    Missing { name: &'static str, path: PathBuf },
}

/// Path of the env file: `$KAFKATABLE_RUN/env`, by default under the cache directory.
pub fn env_file() -> PathBuf {
    if let Ok(run) = std::env::var("KAFKATABLE_RUN") {
        return PathBuf::from(run).join("env");
    }
    let cache = std::env::var("KAFKATABLE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            PathBuf::from(home).join(".cache/kafkatable")
        });
    cache.join("run/env")
}

/// Parses `KEY=VALUE` lines; blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}

impl TestEnv {
    /// Loads the env file, letting the process environment override it.
    pub fn load() -> Result<Self, EnvError> {
        crate::install_crypto_provider();
        let path = env_file();
        let text = std::fs::read_to_string(&path).map_err(|source| EnvError::Read {
            path: path.clone(),
            source,
        })?;
        let file = parse(&text);
        let get = |name: &'static str| -> Result<String, EnvError> {
            std::env::var(name)
                .ok()
                .or_else(|| file.get(name).cloned())
                .ok_or_else(|| EnvError::Missing {
                    name,
                    path: path.clone(),
                })
        };
        Ok(Self {
            kubeconfig: get("KUBECONFIG")?.into(),
            kubectl: get("KT_KUBECTL")?.into(),
            helm: get("KT_HELM")?.into(),
            kafka_classpath: get("KT_KAFKA_CLASSPATH")?,
            kafka_bootstrap: get("KT_KAFKA_BOOTSTRAP")?,
            kafka_sasl_bootstrap: get("KT_KAFKA_SASL_BOOTSTRAP")?,
            kafka_sasl_username: get("KT_KAFKA_SASL_USERNAME")?,
            kafka_sasl_password: get("KT_KAFKA_SASL_PASSWORD")?,
            kafka_tls_bootstrap: get("KT_KAFKA_TLS_BOOTSTRAP")?,
            kafka_tls_ca: get("KT_KAFKA_TLS_CA")?.into(),
            kafka_tls_other_ca: get("KT_KAFKA_TLS_OTHER_CA")?.into(),
            s3_endpoint: get("KT_S3_ENDPOINT")?,
            s3_access_key: get("KT_S3_ACCESS_KEY")?,
            s3_secret_key: get("KT_S3_SECRET_KEY")?,
            s3_region: get("KT_S3_REGION")?,
            minio_bin: get("KT_MINIO_BIN")?.into(),
            iceberg_rest_uri: get("KT_ICEBERG_REST_URI")?,
            iceberg_warehouse: get("KT_ICEBERG_WAREHOUSE")?,
            registry_url: get("KT_REGISTRY_URL")?,
            registry_java: get("KT_REGISTRY_JAVA")?.into(),
            registry_jar: get("KT_REGISTRY_JAR")?.into(),
            python: get("KT_PYTHON")?.into(),
            run_dir: get("KAFKATABLE_RUN")?.into(),
            images: get("KT_IMAGES")?.into(),
            health: get("KT_HEALTH")?.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_comments_and_keeps_equals_in_values() {
        let vars = parse("# c\nA=1\n\nB=x=y\nnot a pair\n");
        assert_eq!(vars.get("A").map(String::as_str), Some("1"));
        assert_eq!(vars.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(vars.len(), 2);
    }
}
