//! Watching Kubernetes: one reflector per kind (list, then watch; relist after a
//! dropped watch or 410 Gone, with backoff, as kube-rs's watcher does), and a
//! builder that turns what they hold into a new config version when it changed.
//! Custom resources whose CRD is not installed simply stay empty (and are retried).
use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use k8s_openapi::api::{
    core::v1::{Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{
        reflector::{self, store::Writer, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, Resource,
};
use mesh_model::model::CUSTOM_KINDS;
use tokio::sync::{watch, Notify};

use crate::translate::{self, Inputs};

fn run<K>(api: Api<K>, writer: Writer<K>, kind: String, changed: Arc<Notify>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    tokio::spawn(async move {
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        futures_util::pin_mut!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if failing {
                        tracing::info!(%kind, "watch recovered");
                        failing = false;
                    }
                    changed.notify_one();
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(%kind, "watch failed, retrying with backoff: {e}");
                        failing = true;
                    }
                }
            }
        }
    });
}

fn typed<K>(client: &Client, changed: &Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let kind = K::kind(&()).to_string();
    run(Api::<K>::all(client.clone()), writer, kind, changed.clone());
    reader
}

pub struct Stores {
    pub namespaces: Store<Namespace>,
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub custom: Vec<(String, Store<DynamicObject>)>,
}

impl Stores {
    pub fn start(client: &Client, changed: &Arc<Notify>) -> Stores {
        let custom = CUSTOM_KINDS
            .iter()
            .map(|k| {
                let (kind, gvk) = (k.kind, GroupVersionKind::gvk(k.group, k.version, k.kind));
                let ar = ApiResource::from_gvk_with_plural(&gvk, k.plural);
                let writer = Writer::<DynamicObject>::new(ar.clone());
                let reader = writer.as_reader();
                run(
                    Api::<DynamicObject>::all_with(client.clone(), &ar),
                    writer,
                    kind.to_string(),
                    changed.clone(),
                );
                (kind.to_string(), reader)
            })
            .collect();
        Stores {
            namespaces: typed(client, changed),
            pods: typed(client, changed),
            services: typed(client, changed),
            endpoint_slices: typed(client, changed),
            custom,
        }
    }

    /// Until the core kinds were listed once (custom resources may not exist).
    pub async fn wait_until_ready(&self) {
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
    }

    pub fn inputs(&self, root_namespace: &str) -> Inputs {
        fn own<K: Clone>(v: Vec<Arc<K>>) -> Vec<K> {
            v.into_iter().map(|a| (*a).clone()).collect()
        }
        Inputs {
            namespaces: own(self.namespaces.state()),
            pods: own(self.pods.state()),
            services: own(self.services.state()),
            custom: self
                .custom
                .iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        s.state().into_iter().map(|a| (*a).clone()).collect(),
                    )
                })
                .collect(),
            root_namespace: root_namespace.to_owned(),
        }
    }
}

/// Publishes a new version whenever what the watchers hold translates to different
/// objects, at most once per `debounce`.
pub async fn watch_cluster(
    client: Client,
    debounce: Duration,
    root_namespace: String,
) -> (super::Current, tokio::task::JoinHandle<()>) {
    let changed = Arc::new(Notify::new());
    let stores = Stores::start(&client, &changed);
    stores.wait_until_ready().await;
    let (first, problems) = translate::objects(&stores.inputs(&root_namespace));
    for p in &problems {
        tracing::warn!("left out: {p}");
    }
    tracing::info!(
        namespaces = first.namespaces.len(),
        workloads = first.workloads.len(),
        services = first.services.len(),
        "cluster listed"
    );
    let (tx, rx) = watch::channel(super::Published {
        version: 1,
        objects: Arc::new(first),
        seen_unix_ms: super::unix_ms(),
    });
    let task = tokio::spawn(async move {
        let mut version = 1;
        // The last compiled version: unchanged policies and routes are reused.
        let mut compiled: Option<mesh_model::state::State> = None;
        // Route status last written, by namespace/name.
        let mut written = std::collections::HashMap::new();
        let first = tx.borrow().objects.clone();
        if let Some(state) = checked(&first, None) {
            super::route_status::write(&client, &state, &mut written).await;
            compiled = Some(state);
        }
        loop {
            changed.notified().await;
            let seen_unix_ms = super::unix_ms();
            tokio::time::sleep(debounce).await;
            let (objects, problems) = translate::objects(&stores.inputs(&root_namespace));
            for p in &problems {
                tracing::warn!("left out: {p}");
            }
            if *tx.borrow().objects == objects {
                continue;
            }
            // Validated before it is sent: what agents would refuse is not sent.
            let Some(state) = checked(&objects, compiled.as_ref()) else {
                continue;
            };
            compiled = Some(state);
            version += 1;
            tracing::info!(
                version,
                workloads = objects.workloads.len(),
                "cluster changed"
            );
            let p = super::Published {
                version,
                objects: Arc::new(objects),
                seen_unix_ms,
            };
            if tx.send(p).is_err() {
                return;
            }
            // After publishing: the agents never wait on the API server's answer.
            if let Some(state) = &compiled {
                super::route_status::write(&client, state, &mut written).await;
            }
        }
    });
    (rx, task)
}

/// Compiles `objects` as every agent will (reusing what `previous` compiled of
/// unchanged kinds), reporting per object what is enforced fail-closed or not
/// attached; None (logged) when agents would refuse it.
fn checked(
    objects: &mesh_model::model::Objects,
    previous: Option<&mesh_model::state::State>,
) -> Option<mesh_model::state::State> {
    let all = Arc::new(objects.clone());
    let state = match mesh_model::state::State::compile(0, all, previous) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cluster config not sent, agents would refuse it: {e:?}; the last sent version stays in force");
            return None;
        }
    };
    for (object, what) in state.fail_closed() {
        tracing::warn!(%object, "enforced fail-closed: {what}");
    }
    for r in &state.l7.rejected {
        tracing::warn!(route = %r.route, parent = %r.parent, "route not attached: {}", r.reason);
    }
    Some(state)
}
