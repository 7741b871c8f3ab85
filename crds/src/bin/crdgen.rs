//! `crdgen`: prints the KafkaTable CustomResourceDefinition as YAML (`make crds` writes it to
//! crds/kafkatable.yaml).

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", kafkatable_crds::crd_yaml()?);
    Ok(())
}
