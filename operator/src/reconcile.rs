//! The controller: each KafkaTable goes through kube-runtime's `finalizer()` into [`apply`]
//! (observe, decide the replicas, server-side apply the children, write the status) or
//! [`cleanup`] (forget the table; optionally delete its consumer group). Children carry a
//! controller owner reference, so the garbage collector removes them with the table.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kafkatable_crds::KafkaTable;
use kafkatable_crds::config::default_group_id;
use kafkatable_crds::status::KafkaTableStatus;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Predicate;
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::autoscale::{self, History, Policy, Sample};
use crate::error::OperatorError;
use crate::metrics::Metrics;
use crate::observe::{self, KafkaClients};
use crate::render::{self, IngesterDefaults};
use crate::status::{self, Observation, Rollout, TopicError};

/// The field manager of everything the operator writes.
pub const MANAGER: &str = "kafkatable-operator";
/// The finalizer on every KafkaTable.
pub const FINALIZER: &str = "kafkatable.io/cleanup";
/// Annotation opting in to deleting the consumer group with the KafkaTable.
pub const DELETE_GROUP_ANNOTATION: &str = "kafkatable.io/delete-consumer-group";

/// Operator settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Defaults of the ingester pods.
    pub ingester: IngesterDefaults,
    /// How often the status of a table is refreshed when nothing changes.
    pub status_interval: Duration,
    /// Watch one namespace only (None: all namespaces).
    pub namespace: Option<String>,
    /// Reconciles running at once.
    pub concurrency: u16,
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes Events on KafkaTables.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Command-line settings.
    pub settings: Settings,
    /// Kafka clients shared per cluster.
    pub kafka: KafkaClients,
    /// Client for the ingesters' `/status`.
    pub http: HttpClient<HttpConnector, Empty<Bytes>>,
    /// Lag history per table, for the autoscaler's stabilization window.
    pub history: Mutex<HashMap<ObjectRef<KafkaTable>, History>>,
    /// The operator's Deployments, from its watch.
    pub deployments: Store<Deployment>,
    /// The ingester pods, from a watch.
    pub pods: Store<Pod>,
    /// The KafkaTables, from the controller's watch.
    pub tables: Store<KafkaTable>,
    /// Hash and time of the last server-side apply of each child: an unchanged child is
    /// applied again only after [`RESYNC`].
    applied: Mutex<HashMap<String, (u64, Instant)>>,
    /// The status this replica last wrote per table. The cached KafkaTable can lag behind our
    /// own write, and a status computed from the stale copy would undo it (the last scale
    /// reason, for one); only the operator writes the status, so its own copy is the newest.
    statuses: Mutex<HashMap<ObjectRef<KafkaTable>, KafkaTableStatus>>,
}

/// How often an unchanged child is applied anyway, to undo edits made behind our back.
const RESYNC: Duration = Duration::from_secs(300);
/// Label of every ingester pod.
const INGESTER_PODS: &str = "app.kubernetes.io/name=kafkatable-ingester";
/// Label of every child the operator writes.
const MANAGED: &str = "app.kubernetes.io/managed-by=kafkatable-operator";

impl Context {
    fn new(
        client: Client,
        metrics: Metrics,
        settings: Settings,
        identity: &str,
        deployments: Store<Deployment>,
        pods: Store<Pod>,
        tables: Store<KafkaTable>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(identity.into()),
            },
        );
        Self {
            client,
            recorder,
            metrics,
            settings,
            kafka: KafkaClients::default(),
            http: observe::http_client(),
            history: Mutex::new(HashMap::new()),
            deployments,
            pods,
            tables,
            applied: Mutex::new(HashMap::new()),
            statuses: Mutex::new(HashMap::new()),
        }
    }
}

/// Runs the controller until the process is asked to stop.
pub async fn run(client: Client, metrics: Metrics, settings: Settings, identity: &str) {
    let namespace = settings.namespace.clone();
    let concurrency = settings.concurrency;
    let tables: Api<KafkaTable> = scoped(&client, namespace.as_deref());
    let (reader, writer) = reflector::store();
    // Reconcile on spec and finalizer changes, not on our own status writes; the status is
    // refreshed by the requeue interval and by changes of the Deployment.
    let tables_stream = watcher(tables, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            (predicates::generation as fn(&KafkaTable) -> Option<u64>)
                .combine(predicates::finalizers as fn(&KafkaTable) -> Option<u64>),
            Default::default(),
        );
    // Deployments and ingester pods come from watch caches, not from a read per reconcile.
    let (deployments, deployments_writer) = reflector::store();
    let deployments_stream = watcher(
        scoped::<Deployment>(&client, namespace.as_deref()),
        watcher::Config::default().labels(MANAGED),
    )
    .default_backoff()
    .modify(slim)
    .reflect(deployments_writer)
    .touched_objects();
    let (pods, pods_writer) = reflector::store();
    let pods_stream = watcher(
        scoped::<Pod>(&client, namespace.as_deref()),
        watcher::Config::default().labels(INGESTER_PODS),
    )
    .default_backoff()
    .modify(slim)
    .reflect(pods_writer)
    .touched_objects()
    .for_each(|_| futures::future::ready(()));
    let pods_task = tokio::spawn(pods_stream);
    let ctx = Arc::new(Context::new(
        client,
        metrics,
        settings,
        identity,
        deployments.clone(),
        pods.clone(),
        reader.clone(),
    ));
    let controller = Controller::for_stream(tables_stream, reader)
        .owns_stream(deployments_stream)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::trace!(table = %object, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        });
    // Reconciling before the caches are filled would take existing children for missing.
    tokio::pin!(controller);
    let ready = async {
        let _ = pods.wait_until_ready().await;
        let _ = deployments.wait_until_ready().await;
    };
    tokio::select! {
        () = &mut controller => {}
        () = ready => {
            tracing::info!("caches filled; reconciling");
            controller.await;
        }
    }
    pods_task.abort();
}

/// Drops what the caches never read (managed fields, kubectl's last-applied copy): most of an
/// object's size, and the operator holds one of each child per table.
fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The ingester pods of table `name` in `namespace`, from the watch cache.
fn table_pods(ctx: &Context, namespace: &str, name: &str) -> Vec<Arc<Pod>> {
    ctx.pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(namespace)
            && p.labels().get(render::TABLE_LABEL).map(String::as_str) == Some(name)
    })
}

/// Checks at start-up that the KafkaTable CRD is served.
pub async fn check_crd(client: &Client, namespace: Option<&str>) -> Result<(), OperatorError> {
    let api: Api<KafkaTable> = scoped(client, namespace);
    api.list(&kube::api::ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(OperatorError::CrdMissing)
}

#[tracing::instrument(skip_all, fields(table = %kt.name_any(), namespace = kt.namespace().unwrap_or_default()))]
async fn reconcile(kt: Arc<KafkaTable>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    let started = Instant::now();
    let namespace = kt.namespace().unwrap_or_default();
    let api: Api<KafkaTable> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, kt, |event| async {
        match event {
            Event::Apply(kt) => apply(&kt, &ctx).await,
            Event::Cleanup(kt) => cleanup(&kt, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => OperatorError::Finalizer(Box::new(other)),
    });
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciles.with_label_values(&[label]).inc();
    ctx.metrics
        .reconcile_seconds
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    result
}

fn error_policy(kt: Arc<KafkaTable>, error: &OperatorError, ctx: Arc<Context>) -> Action {
    let kind = error.kind().as_str();
    ctx.metrics.errors.with_label_values(&[kind]).inc();
    tracing::warn!(table = %kt.name_any(), error = %error, kind, "reconcile failed");
    if error.is_transient() {
        Action::requeue(Duration::from_secs(5))
    } else {
        Action::requeue(Duration::from_secs(300))
    }
}

fn kube_err(action: &'static str, object: String) -> impl FnOnce(kube::Error) -> OperatorError {
    move |source| OperatorError::Kube {
        action,
        object,
        source,
    }
}

/// Server-side applies one child under the operator's field manager, unless the same object
/// was applied less than [`RESYNC`] ago and the live object (when watched) still matches.
async fn apply_child<K>(
    ctx: &Context,
    api: &Api<K>,
    child: &K,
    live_matches: bool,
) -> Result<(), OperatorError>
where
    K: Resource<DynamicType = ()>
        + Serialize
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let name = child.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(child)?;
    // SSA wants apiVersion and kind in the body.
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    let key = format!(
        "{}/{}/{name}",
        child.meta().namespace.as_deref().unwrap_or_default(),
        K::kind(&())
    );
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        value.to_string().hash(&mut h);
        h.finish()
    };
    let fresh = ctx
        .applied
        .lock()
        .ok()
        .and_then(|a| a.get(&key).copied())
        .is_some_and(|(h, at)| h == hash && at.elapsed() < RESYNC);
    if fresh && live_matches {
        return Ok(());
    }
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
    .map_err(kube_err("apply", format!("{} {name}", K::kind(&()))))?;
    if let Ok(mut a) = ctx.applied.lock() {
        a.insert(key, (hash, Instant::now()));
    }
    Ok(())
}

/// Applies the children in their order; the first the API refuses stops the rest.
async fn apply_children(
    ctx: &Context,
    namespace: &str,
    children: &render::Children,
    deployment_matches: bool,
) -> Result<(), OperatorError> {
    let client = &ctx.client;
    for child in children.list() {
        match child {
            render::Child::ConfigMap(c) => {
                apply_child(ctx, &Api::namespaced(client.clone(), namespace), c, true).await?
            }
            render::Child::Deployment(d) => {
                let api = Api::namespaced(client.clone(), namespace);
                apply_child(ctx, &api, d, deployment_matches).await?
            }
            render::Child::Service(s) => {
                apply_child(ctx, &Api::namespaced(client.clone(), namespace), s, true).await?
            }
            render::Child::PodDisruptionBudget(p) => {
                apply_child(ctx, &Api::namespaced(client.clone(), namespace), p, true).await?
            }
        }
    }
    Ok(())
}

/// Forgets what was applied for a table's children (they go with it).
fn forget_applied(ctx: &Context, namespace: &str, name: &str) {
    let prefix = format!("{namespace}/");
    let suffix = format!("/{}", render::child_name_of(name));
    if let Ok(mut a) = ctx.applied.lock() {
        a.retain(|k, _| !(k.starts_with(&prefix) && k.ends_with(&suffix)));
    }
}

/// One reconcile of a table: observe it, decide its replica count, apply its children, report
/// its status. The status is written whatever the children's fate.
async fn apply(kt: &KafkaTable, ctx: &Context) -> Result<Action, OperatorError> {
    let key = ObjectRef::from_obj(kt);
    let previous = ctx
        .statuses
        .lock()
        .ok()
        .and_then(|s| s.get(&key).cloned())
        .or_else(|| kt.status.clone())
        .unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let selector = render::selector_string(kt);
    let commit_interval_ms = duration_ms(&kt.spec.commit.interval, 60_000);
    // A new table says at once that it is not ready yet, before Kafka is asked anything, so
    // that `kubectl wait` and GitOps tools never read a fresh object as current.
    let previous = if previous.conditions.is_empty() {
        let initial = status::created(kt.metadata.generation, &selector, &now);
        let tables: Api<KafkaTable> =
            Api::namespaced(ctx.client.clone(), &kt.namespace().unwrap_or_default());
        write_status(kt, &tables, ctx, &previous, initial.clone()).await?;
        initial
    } else {
        previous
    };

    // A spec the ingester cannot run is reported, not applied.
    let config = match render::config_json(kt) {
        Ok(config) => config,
        Err(e) => {
            let o = Observation {
                generation: kt.metadata.generation,
                selector,
                commit_interval_ms,
                invalid_spec: Some(e.to_string()),
                topic: Err(TopicError::unreachable("not asked: the spec is invalid")),
                rollout: Rollout {
                    observed: true,
                    ..Rollout::default()
                },
                now,
                ..Observation::default()
            };
            report(kt, ctx, &previous, o).await?;
            return Err(e);
        }
    };
    let clock = Instant::now();
    let seen = observe(kt, ctx, &previous).await;
    let observed_ms = clock.elapsed().as_millis();
    let (replicas, scale) = decide(kt, ctx, &seen, &previous, &now).await?;
    let children = render::children(kt, config, replicas, &ctx.settings.ingester)?;
    let namespace = kt.namespace().unwrap_or_default();
    let unchanged = seen.deployment_matches(&children.deployment, replicas);
    // A child the API refuses is reported in the status, then returned as the error.
    let applied = apply_children(ctx, &namespace, &children, unchanged).await;
    let applied_ms = clock.elapsed().as_millis();
    let (invalid_spec, apply_failed) = match &applied {
        Ok(()) => (None, None),
        Err(e) if e.is_refused() => (Some(e.to_string()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let rollout = seen.rollout(replicas);
    let o = Observation {
        generation: kt.metadata.generation,
        selector,
        suspended: kt.spec.suspend,
        desired: replicas,
        commit_interval_ms,
        topic_name: kt.spec.source.topic.clone(),
        commit_failures_degraded: kt.spec.errors.commit_failures.degraded_after.max(1) as u32,
        bad_record_rate: (
            kt.spec.errors.degraded_rate.records.max(1) as u64,
            kt.spec.errors.degraded_rate.window.clone(),
        ),
        catch_up_lag: kt
            .spec
            .scaling
            .lag_per_replica
            .saturating_mul(i64::from(replicas.max(1))),
        invalid_spec,
        apply_failed,
        shared_with: render::shared_with(kt, &ctx.tables.state()),
        missing_secrets: seen.missing_secrets,
        missing_config_maps: seen.missing_config_maps,
        rollout,
        crashing: seen.pods.crashing,
        reports: seen.pods.reports,
        topic: seen.topic,
        group_offsets: seen.group_offsets,
        scale,
        now,
    };
    report(kt, ctx, &previous, o).await?;
    applied?;
    tracing::debug!(
        kafka_ms = seen.kafka_ms,
        observed_ms,
        applied_ms,
        total_ms = clock.elapsed().as_millis(),
        "reconciled"
    );
    Ok(Action::requeue(jittered(ctx.settings.status_interval)))
}

/// What a reconcile sees of a table: its topic, its pods and their reports, the group's
/// offsets where no pod reports a sync point, and its Deployment.
struct Seen {
    topic: Result<BTreeMap<i32, status::Watermarks>, TopicError>,
    /// Secrets the spec names that do not exist or lack a key.
    missing_secrets: Vec<String>,
    /// ConfigMap keys the spec names that do not exist.
    missing_config_maps: Vec<String>,
    pods: observe::Pods,
    /// The sync points known from the pods' reports and the previous status.
    known: BTreeMap<i32, i64>,
    group_offsets: BTreeMap<i32, i64>,
    deployment: Option<Arc<Deployment>>,
    kafka_ms: u128,
}

impl Seen {
    /// The Deployment's replica count (0 when there is none).
    fn current(&self) -> i32 {
        self.deployment
            .as_ref()
            .and_then(|d| d.spec.as_ref())
            .and_then(|s| s.replicas)
            .unwrap_or(0)
    }

    /// Whether the Deployment as watched still carries `replicas` and the rendered config.
    fn deployment_matches(&self, rendered: &Deployment, replicas: i32) -> bool {
        let template_hash = |d: &Deployment| {
            d.spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(render::CONFIG_HASH_ANNOTATION).cloned())
        };
        self.deployment.as_deref().is_some_and(|d| {
            d.spec.as_ref().and_then(|s| s.replicas) == Some(replicas)
                && template_hash(d) == template_hash(rendered)
        })
    }

    fn rollout(&self, replicas: i32) -> Rollout {
        self.deployment
            .as_ref()
            .map(|d| {
                let s = d.status.clone().unwrap_or_default();
                Rollout {
                    replicas: s.replicas.unwrap_or(0),
                    ready: s.ready_replicas.unwrap_or(0),
                    updated: s.updated_replicas.unwrap_or(0),
                    observed: s.observed_generation >= d.metadata.generation
                        && d.spec.as_ref().and_then(|s| s.replicas) == Some(replicas),
                }
            })
            .unwrap_or_default()
    }
}

/// Observes the topic, the pods and their reports, the group's offsets and the Deployment.
async fn observe(kt: &KafkaTable, ctx: &Context, previous: &KafkaTableStatus) -> Seen {
    let namespace = kt.namespace().unwrap_or_default();
    let name = kt.name_any();
    let clock = Instant::now();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let topic_name = &kt.spec.source.topic;
    let endpoint = observe::endpoint(kt, &secrets).await;
    let missing_secrets = observe::missing_secrets(kt, &secrets).await;
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let missing_config_maps = observe::missing_config_maps(kt, &config_maps).await;
    let topic = match &endpoint {
        Ok(ep) => ctx
            .kafka
            .watermarks(ep, topic_name)
            .await
            .map_err(|e| TopicError::from(&e)),
        Err(e) => Err(TopicError::from(e)),
    };
    let kafka_ms = clock.elapsed().as_millis();
    let pods = observe::pods(&table_pods(ctx, &namespace, &name), &ctx.http).await;
    let known = status::sync_points(&previous.sync_points, &pods.reports);
    let mut group_offsets = BTreeMap::new();
    // The group's offsets stand in for partitions whose sync point nobody reported yet (a
    // short-lived client, so only for partitions that hold records, and not while suspended).
    if let (Ok(ep), Ok(marks), false) = (&endpoint, &topic, kt.spec.suspend) {
        let unknown: Vec<i32> = marks
            .iter()
            .filter(|(p, w)| w.high > w.low && !known.contains_key(p))
            .map(|(p, _)| *p)
            .collect();
        if !unknown.is_empty() {
            let group = kt
                .spec
                .source
                .consumer_group
                .clone()
                .unwrap_or_else(|| default_group_id(&namespace, &name));
            match ctx
                .kafka
                .group_offsets(ep, &group, topic_name, unknown)
                .await
            {
                Ok(offsets) => group_offsets = offsets,
                Err(e) => tracing::debug!(error = %e, "cannot read the group offsets"),
            }
        }
    }
    let deployment = ctx
        .deployments
        .get(&ObjectRef::new(&render::child_name(kt)).within(&namespace));
    Seen {
        topic,
        missing_secrets,
        missing_config_maps,
        pods,
        known,
        group_offsets,
        deployment,
        kafka_ms,
    }
}

/// Decides the replica count, and announces a change with an Event (returned for the
/// status as the last scale).
async fn decide(
    kt: &KafkaTable,
    ctx: &Context,
    seen: &Seen,
    previous: &KafkaTableStatus,
    now: &Time,
) -> Result<(i32, Option<(Time, String)>), OperatorError> {
    let current = seen.current();
    let marks = seen.topic.as_ref().ok();
    let partitions = marks.map(|t| t.len() as i32).or(previous.partitions);
    let lag_total = marks.map(|t| status::lag(t, &seen.known, &seen.group_offsets).total);
    let decision = desired_replicas(kt, ctx, partitions, current, lag_total)?;
    // A new Deployment counts as a scale from zero.
    if decision.replicas == current {
        return Ok((current, None));
    }
    let message = format!(
        "scaled from {current} to {}: {}",
        decision.replicas, decision.reason
    );
    tracing::info!(from = current, to = decision.replicas, reason = %decision.reason, "scaling");
    publish(
        ctx,
        kt,
        EventType::Normal,
        // Distinct reasons: the event recorder folds events of one reason into a series.
        if decision.replicas > current {
            "ScaledUp"
        } else {
            "ScaledDown"
        },
        "Scale",
        message.clone(),
    )
    .await;
    Ok((decision.replicas, Some((now.clone(), message))))
}

/// Computes the status from what was observed and writes it, with the metrics that mirror it.
async fn report(
    kt: &KafkaTable,
    ctx: &Context,
    previous: &KafkaTableStatus,
    o: Observation,
) -> Result<(), OperatorError> {
    let namespace = kt.namespace().unwrap_or_default();
    let name = kt.name_any();
    let new = status::compute(previous, &o);
    ctx.metrics
        .desired_replicas
        .with_label_values(&[&namespace, &name])
        .set(i64::from(o.desired));
    if let Some(lag) = &new.lag {
        ctx.metrics
            .lag
            .with_label_values(&[&namespace, &name])
            .set(lag.total);
    }
    let tables: Api<KafkaTable> = Api::namespaced(ctx.client.clone(), &namespace);
    write_status(kt, &tables, ctx, previous, new).await
}

/// The interval give or take 10%, so tables created together do not reconcile in lockstep.
fn jittered(interval: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let factor = 0.9 + 0.2 * f64::from(nanos % 1000) / 1000.0;
    interval.mul_f64(factor)
}

fn duration_ms(text: &str, default: i64) -> i64 {
    kafkatable_crds::units::parse_duration(text).map_or(default, |d| {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    })
}

fn desired_replicas(
    kt: &KafkaTable,
    ctx: &Context,
    partitions: Option<i32>,
    current: i32,
    lag: Option<i64>,
) -> Result<autoscale::Decision, OperatorError> {
    let scaling = &kt.spec.scaling;
    let upper = partitions.map_or(scaling.max_replicas.max(1000), |p| p.max(1));
    if kt.spec.suspend {
        return Ok(autoscale::Decision {
            replicas: 0,
            reason: "spec.suspend is true".into(),
        });
    }
    if !scaling.autoscale {
        let wanted = kt.spec.replicas.unwrap_or(1);
        return Ok(autoscale::Decision {
            replicas: wanted.min(upper),
            reason: if wanted > upper {
                format!("spec.replicas {wanted}, at most one per partition ({upper})")
            } else {
                format!("spec.replicas {wanted}")
            },
        });
    }
    let stabilization_ms = duration_ms(&scaling.scale_down_stabilization, 300_000);
    let policy = Policy {
        min_replicas: scaling.min_replicas,
        max_replicas: scaling.max_replicas,
        lag_per_replica: scaling.lag_per_replica,
        activation_lag: scaling.activation_lag,
        stabilization_ms,
    };
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let key = ObjectRef::from_obj(kt);
    let mut histories = ctx
        .history
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let history = histories.entry(key).or_default();
    if let Some(lag) = lag {
        history.record(Sample { at_ms: now_ms, lag }, stabilization_ms);
    } else {
        // Without a lag reading, hold the current count (within the bounds).
        let (lower, upper) = autoscale::bounds(&policy, partitions);
        return Ok(autoscale::Decision {
            replicas: current.clamp(lower, upper),
            reason: "lag unknown: holding".into(),
        });
    }
    Ok(autoscale::decide(
        &policy, partitions, current, history, now_ms,
    ))
}

async fn write_status(
    kt: &KafkaTable,
    api: &Api<KafkaTable>,
    ctx: &Context,
    previous: &KafkaTableStatus,
    new: KafkaTableStatus,
) -> Result<(), OperatorError> {
    // The initial status and the first observed one only announce problems.
    let first = previous.conditions.is_empty()
        || previous
            .conditions
            .iter()
            .any(|c| c.type_ == kafkatable_crds::status::condition::READY && c.reason == "Created");
    for c in status::changed(&previous.conditions, &new.conditions) {
        if first && (c.type_ != "Degraded" || c.status != "True") {
            continue;
        }
        let warning = (c.type_ == "Degraded" || c.type_ == "Stalled") && c.status == "True";
        let kind = if warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let reason = format!(
            "{}{}",
            c.type_,
            if c.status == "True" { "" } else { "Cleared" }
        );
        publish(
            ctx,
            kt,
            kind,
            &reason,
            "Observe",
            format!("{}: {}", c.reason, c.message),
        )
        .await;
    }
    if &new == previous {
        return Ok(());
    }
    let patch = serde_json::json!({"status": status::merge_patch(
        &serde_json::to_value(previous).unwrap_or_default(),
        &serde_json::to_value(&new).unwrap_or_default(),
    )});
    let key = ObjectRef::from_obj(kt);
    api.patch_status(
        &kt.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(kube_err(
        "write the status of",
        format!("KafkaTable {}", kt.name_any()),
    ))?;
    if let Ok(mut statuses) = ctx.statuses.lock() {
        statuses.insert(key, new);
    }
    Ok(())
}

async fn publish(
    ctx: &Context,
    kt: &KafkaTable,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &kt.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish an event");
    }
}

async fn cleanup(kt: &KafkaTable, ctx: &Context) -> Result<Action, OperatorError> {
    let namespace = kt.namespace().unwrap_or_default();
    let name = kt.name_any();
    if let Ok(mut h) = ctx.history.lock() {
        h.remove(&ObjectRef::from_obj(kt));
    }
    if let Ok(mut statuses) = ctx.statuses.lock() {
        statuses.remove(&ObjectRef::from_obj(kt));
    }
    ctx.metrics.forget(&namespace, &name);
    forget_applied(ctx, &namespace, &name);
    if kt
        .annotations()
        .get(DELETE_GROUP_ANNOTATION)
        .map(String::as_str)
        == Some("true")
    {
        let group = kt
            .spec
            .source
            .consumer_group
            .clone()
            .unwrap_or_else(|| default_group_id(&namespace, &name));
        // Kafka refuses to delete a group with members: stop the ingesters first.
        let running = table_pods(ctx, &namespace, &name).len();
        if running > 0 {
            let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
            let child = render::child_name(kt);
            let stop = serde_json::json!({"spec": {"replicas": 0}});
            if let Err(e) = deployments
                .patch(&child, &PatchParams::default(), &Patch::Merge(&stop))
                .await
            {
                tracing::debug!(error = %e, "cannot scale the ingesters to zero");
            }
            return Err(OperatorError::CleanupPending(format!(
                "{running} ingester pods still run; the consumer group {group} is deleted once they are gone"
            )));
        }
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        let endpoint = observe::endpoint(kt, &secrets).await?;
        observe::delete_group(&endpoint, &group).await?;
        tracing::info!(%group, "deleted the consumer group");
    }
    // The children go with the KafkaTable: they carry its controller owner reference.
    Ok(Action::await_change())
}
