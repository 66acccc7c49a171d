//! What one node receives, deltas between versions, and the agent's view of it. No
//! I/O: table-tested.
//!
//! A node gets every Namespace, Service, policy and route (small, and any pod may
//! reach any Service), its own Node object, and every Workload (remote ones are
//! endpoints and identities) with `spec.netns` only on its own workloads. Objects
//! travel one per `Resource`, as the model's JSON with a hash; an object's JSON is
//! made once and reused while the object does not change.
use std::{
    collections::{hash_map::DefaultHasher, BTreeMap, HashMap},
    hash::{Hash, Hasher},
    sync::Arc,
};

use crate::{
    model::{Decoder, Key, Kind, Object, Objects},
    proto::config::{ConfigUpdate, Resource, ResourceKey},
};

/// One object as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub json: Arc<[u8]>,
    pub hash: u64,
}

/// A node's resources.
pub type Set = BTreeMap<Key, Entry>;

/// The largest message the control plane sends (tonic's default limit is 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

fn entry(json: Vec<u8>) -> Entry {
    let mut h = DefaultHasher::new();
    json.hash(&mut h);
    Entry {
        json: json.into(),
        hash: h.finish(),
    }
}

/// Makes each node's set, encoding an object only when it changed.
#[derive(Default)]
pub struct Encoder {
    /// (key, as seen by its own node) -> the object and its encoding, and the
    /// version it was last used in.
    cache: HashMap<(Key, bool), (Object, Entry, u64)>,
    version: u64,
}

impl Encoder {
    fn encode(&mut self, o: Object, own: bool) -> Option<(Key, Entry)> {
        let key = o.key();
        let cached = (key.clone(), own);
        if let Some((old, e, used)) = self.cache.get_mut(&cached) {
            if *old == o {
                *used = self.version;
                return Some((key, e.clone()));
            }
        }
        let json = match o.to_json() {
            Ok(j) => j,
            Err(err) => {
                tracing::error!(%key, "cannot encode: {err}");
                return None;
            }
        };
        let e = entry(json);
        self.cache.insert(cached, (o, e.clone(), self.version));
        Some((key, e))
    }

    /// Version `version`'s set for `node`.
    pub fn for_node(&mut self, version: u64, o: &Objects, node: &str) -> Set {
        if version > self.version {
            // Forget what neither this version nor the one before used.
            let keep_from = self.version;
            self.cache.retain(|_, (_, _, used)| *used >= keep_from);
            self.version = version;
        }
        let mut s = Set::new();
        for obj in o.iter() {
            let own = match &obj {
                Object::Node(n) if n.metadata.name != node => continue,
                Object::Workload(w) if w.spec.node != node => {
                    let mut remote = (**w).clone();
                    remote.spec.netns = None;
                    self.encode(Object::Workload(Arc::new(remote)), false)
                }
                _ => self.encode(obj, true),
            };
            s.extend(own);
        }
        s
    }
}

fn key(k: &Key) -> ResourceKey {
    ResourceKey {
        kind: k.kind.as_str().to_owned(),
        namespace: k.namespace.clone(),
        name: k.name.clone(),
    }
}

fn resource(k: &Key, e: &Entry) -> Resource {
    Resource {
        key: Some(key(k)),
        json: e.json.to_vec(),
        hash: e.hash,
    }
}

/// The messages that take a node from `old` (None: nothing, send a snapshot) to
/// `new`, each under `max_bytes`; empty when nothing changed.
pub fn updates(version: u64, old: Option<&Set>, new: &Set, max_bytes: usize) -> Vec<ConfigUpdate> {
    let upserts: Vec<Resource> = new
        .iter()
        .filter(|(k, e)| old.is_none_or(|o| o.get(*k).map(|x| x.hash) != Some(e.hash)))
        .map(|(k, e)| resource(k, e))
        .collect();
    let deletes: Vec<ResourceKey> = old
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(|k| !new.contains_key(*k))
        .map(key)
        .collect();
    if old.is_some() && upserts.is_empty() && deletes.is_empty() {
        return Vec::new();
    }
    let mut out = vec![ConfigUpdate {
        version,
        snapshot: old.is_none(),
        ..ConfigUpdate::default()
    }];
    let mut bytes = 0;
    for r in upserts {
        let size = r.json.len()
            + r.key
                .as_ref()
                .map_or(0, |k| k.kind.len() + k.namespace.len() + k.name.len())
            + 32;
        if bytes + size > max_bytes && bytes > 0 {
            out.push(ConfigUpdate {
                version,
                ..ConfigUpdate::default()
            });
            bytes = 0;
        }
        bytes += size;
        out.last_mut()
            .expect("one message at least")
            .upserts
            .push(r);
    }
    let n = out.len();
    for (i, m) in out.iter_mut().enumerate() {
        m.more = i + 1 < n;
    }
    out.last_mut().expect("one message at least").deletes = deletes;
    out
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("resource without a key")]
    NoKey,
    #[error("{0}")]
    Kind(#[from] crate::model::UnknownKind),
    #[error("{key}: {message}")]
    Json { key: String, message: String },
}

struct Json<'a>(&'a [u8]);

impl Decoder<serde_json::Error> for Json<'_> {
    fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(self.0)
    }
}

fn decode_key(k: Option<&ResourceKey>) -> Result<Key, DecodeError> {
    let k = k.ok_or(DecodeError::NoKey)?;
    Ok(Key {
        kind: k.kind.parse::<Kind>()?,
        namespace: k.namespace.clone(),
        name: k.name.clone(),
    })
}

/// What an agent holds: the objects the control plane sent it, decoded.
#[derive(Debug, Default, Clone)]
pub struct View(BTreeMap<Key, Object>);

impl View {
    /// Applies one message: only its resources are decoded. The first error is
    /// returned after the rest was applied, so the view follows the control plane.
    pub fn apply(&mut self, u: &ConfigUpdate) -> Result<(), DecodeError> {
        if u.snapshot {
            self.0.clear();
        }
        let mut first = Ok(());
        for r in &u.upserts {
            let decoded = decode_key(r.key.as_ref()).and_then(|k| {
                Object::decode(k.kind, Json(&r.json))
                    .map(|o| (k.clone(), o))
                    .map_err(|e| DecodeError::Json {
                        key: k.to_string(),
                        message: e.to_string(),
                    })
            });
            match decoded {
                Ok((k, o)) => {
                    self.0.insert(k, o);
                }
                Err(e) => first = first.and(Err(e)),
            }
        }
        for k in &u.deletes {
            match decode_key(Some(k)) {
                Ok(k) => {
                    self.0.remove(&k);
                }
                Err(e) => first = first.and(Err(e)),
            }
        }
        first
    }

    /// The objects, for the same validation and compilation as a local file.
    pub fn objects(&self) -> Objects {
        let mut o = Objects::default();
        for x in self.0.values() {
            o.push(x.clone());
        }
        o
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests;
