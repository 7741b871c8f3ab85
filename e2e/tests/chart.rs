//! The Helm chart: its values are checked by values.schema.json, and what it renders is
//! accepted by the API server, the optional NetworkPolicy for the ingesters included.

use std::process::Command;

use kafkatable_e2e::env::TestEnv;
use kafkatable_e2e::fixtures::{TestNamespace, kube_client};
use kafkatable_e2e::operator::chart_dir;

fn helm(env: &TestEnv, args: &[&str]) -> std::process::Output {
    Command::new(&env.helm)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(args)
        .output()
        .expect("helm runs")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn values_the_schema_refuses_fail_the_lint_naming_the_value() -> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let chart = chart_dir().display().to_string();
    let ok = helm(&env, &["lint", "--strict", &chart]);
    assert!(ok.status.success(), "{}", text(&ok));
    for (set, named) in [
        ("logFormat=xml", "/logFormat"),
        ("ingester.image=ghcr.io/x/y:1", "/ingester/image"),
        ("replicaCount=0", "/replicaCount"),
        ("imageTag=1", "imageTag"),
        ("watchNamespace=Not_A_Name", "/watchNamespace"),
    ] {
        let out = helm(&env, &["lint", "--strict", &chart, "--set", set]);
        assert!(!out.status.success(), "{set} passed the lint");
        assert!(text(&out).contains(named), "{set}: {}", text(&out));
    }
    Ok(())
}

#[tokio::test]
async fn the_rendered_chart_and_its_network_policy_are_accepted_by_the_api_server()
-> anyhow::Result<()> {
    let env = TestEnv::load()?;
    let client = kube_client(&env).await?;
    let ns = TestNamespace::create(&env, &client, "chart-np").await?;
    let chart = chart_dir().display().to_string();
    let rendered = helm(
        &env,
        &[
            "template",
            "kt",
            &chart,
            "--namespace",
            &ns.name,
            "--kube-version",
            "1.34.1",
            "--set",
            &format!("watchNamespace={}", ns.name),
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=observability",
        ],
    );
    assert!(rendered.status.success(), "{}", text(&rendered));
    let manifest = String::from_utf8(rendered.stdout)?;
    let docs: Vec<serde_json::Value> = manifest
        .split("\n---")
        .filter_map(|d| serde_yaml::from_str::<serde_json::Value>(d).ok())
        .filter(|d| d.is_object())
        .collect();
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .ok_or_else(|| anyhow::anyhow!("no NetworkPolicy rendered:\n{manifest}"))?;
    // It selects the pods the operator labels as ingesters, and admits only the operator's
    // pods and the scraper on the ingesters' HTTP port.
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "kafkatable-ingester"
    );
    let from = &policy["spec"]["ingress"][0]["from"];
    assert_eq!(
        from[0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "kafkatable-operator"
    );
    assert_eq!(
        from[1]["namespaceSelector"]["matchLabels"]["team"],
        "observability"
    );
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 9090);
    // The API server takes every object as rendered (CRDs are installed by the chart's crds/).
    let path = env.run_dir.join(format!("{}-chart.yaml", ns.name));
    std::fs::write(&path, &manifest)?;
    let out = Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["apply", "--dry-run=server", "-n", &ns.name, "-f"])
        .arg(&path)
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("networkpolicy.networking.k8s.io/kt-kafkatable-operator-ingesters"),
        "{}",
        text(&out)
    );
    std::fs::remove_file(&path)?;
    Ok(())
}
