//! The ferrymesh control plane's Kubernetes source: watchers (kube-rs) for
//! Namespaces, Pods, Services, EndpointSlices, Gateway API routes and ferrymesh's
//! policy CRDs, turned into the model the node agents use (`translate`, pure and
//! table-tested) and published as versions for config distribution.
pub mod source;
pub mod translate;
