//! What one node receives, deltas between versions, and the agent's view of it. No
//! I/O: table-tested.
//!
//! A node gets every Namespace, Service, policy and route (small, and any pod may
//! reach any Service), its own Node object, and every Workload (remote ones are
//! endpoints and identities) with `spec.netns` only on its own workloads. Objects
//! travel one per `Resource`, as the model's JSON with a hash; an object's JSON is
//! made once and reused while the object does not change.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use sha2::{Digest, Sha256};

use crate::{
    model::{Decoder, Key, Kind, Object, Objects},
    proto::config::{ConfigUpdate, Resource, ResourceKey},
};

/// SHA-256 of an object's JSON.
pub type Hash = [u8; 32];

/// One object as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Shared by every node's message that carries the object.
    pub json: bytes::Bytes,
    pub hash: Hash,
}

/// A node's resources.
pub type Set = BTreeMap<Key, Entry>;

/// The largest message the control plane sends (tonic's default limit is 4 MiB;
/// the receiver keeps a buffer as large as the largest message it got).
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;

fn entry(json: Vec<u8>) -> Entry {
    let hash = Sha256::digest(&json).into();
    Entry {
        json: json.into(),
        hash,
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
        json: e.json.clone(),
        hash: e.hash.to_vec(),
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

/// A key as the view stores it: 16 bytes of SHA-256 of kind, namespace and name,
/// so that holding thousands of objects costs no allocation per key.
type ViewKey = [u8; 16];

fn view_key(k: &Key) -> ViewKey {
    let mut h = Sha256::new();
    for part in [k.kind.as_str(), &k.namespace, &k.name] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// What an agent holds: the objects the control plane sent it, decoded, with the
/// hash each came with.
#[derive(Debug, Default, Clone)]
pub struct View(HashMap<ViewKey, (Hash, Object)>);

impl View {
    /// Applies one message: only resources whose hash changed are decoded, so that a
    /// snapshot after a reconnect reuses the objects already held. The first error is
    /// returned after the rest was applied, so the view follows the control plane.
    pub fn apply(&mut self, u: &ConfigUpdate) -> Result<(), DecodeError> {
        let mut held = if u.snapshot {
            std::mem::take(&mut self.0)
        } else {
            HashMap::new()
        };
        let mut first = Ok(());
        for r in &u.upserts {
            match self.upsert(r, &mut held) {
                Ok(()) => {}
                Err(e) => first = first.and(Err(e)),
            }
        }
        for k in &u.deletes {
            match decode_key(Some(k)) {
                Ok(k) => {
                    self.0.remove(&view_key(&k));
                }
                Err(e) => first = first.and(Err(e)),
            }
        }
        first
    }

    /// One resource; `held` has what a snapshot replaces (reused when unchanged).
    fn upsert(
        &mut self,
        r: &Resource,
        held: &mut HashMap<ViewKey, (Hash, Object)>,
    ) -> Result<(), DecodeError> {
        let k = decode_key(r.key.as_ref())?;
        let vk = view_key(&k);
        let hash: Hash = r.hash.as_slice().try_into().unwrap_or_default();
        let known = held.remove(&vk).or_else(|| self.0.remove(&vk));
        let o = match known {
            Some((h, o)) if h == hash && hash != Hash::default() => o,
            _ => Object::decode(k.kind, Json(&r.json)).map_err(|e| DecodeError::Json {
                key: k.to_string(),
                message: e.to_string(),
            })?,
        };
        self.0.insert(vk, (hash, o));
        Ok(())
    }

    /// The objects, sorted by kind, namespace and name, for the same validation and
    /// compilation as a local file.
    pub fn objects(&self) -> Objects {
        let mut all: Vec<&Object> = self.0.values().map(|(_, x)| x).collect();
        fn order(o: &Object) -> (Kind, &str, &str) {
            let m = o.metadata();
            let ns = if o.kind().namespaced() {
                m.namespace()
            } else {
                ""
            };
            (o.kind(), ns, m.name.as_str())
        }
        all.sort_by(|a, b| order(a).cmp(&order(b)));
        let mut o = Objects::default();
        for x in all {
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
