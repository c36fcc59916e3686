//! Field by field: which fields of an Envoy resource weir reads, which change nothing for it,
//! and a refusal naming any other field that is set.
//!
//! The resource is walked as a [`DynamicMessage`] over Envoy's descriptors, so a field weir has
//! never heard of (a newer Envoy's, say) is refused like any other: nothing is half-applied
//! because a translator forgot to look at a field.

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use std::sync::LazyLock;

/// Envoy's v3 API (and the types it embeds) as protobuf descriptors: made by
/// `scripts/envoy-descriptors.sh` from the .proto files of the envoy-types version weir uses.
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!("envoy-v3.desc").as_slice())
        .unwrap_or_else(|e| panic!("the built-in Envoy descriptors do not decode: {e}"))
});

/// The descriptor pool of Envoy's v3 API.
pub fn pool() -> &'static DescriptorPool {
    &POOL
}

/// The descriptor of the message a type URL (`type.googleapis.com/NAME`) names.
pub fn message_for_type_url(type_url: &str) -> Option<MessageDescriptor> {
    let name = type_url.rsplit_once('/').map_or(type_url, |(_, n)| n);
    pool().get_message_by_name(name)
}

/// Why a resource (or part of one) is refused: the field, as a path from the resource with
/// list indices (`filter_chains[0].filters[1].name`), and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Path of the field from the resource.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl Refusal {
    /// A refusal of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Refusal {
        Refusal { field: field.into(), reason: reason.into() }
    }

    /// The same refusal with `prefix.` before its field.
    pub fn under(mut self, prefix: &str) -> Refusal {
        if !prefix.is_empty() {
            self.field = if self.field.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{}", self.field)
            };
        }
        self
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "`{}`: {}", self.field, self.reason)
        }
    }
}

/// What weir does with the fields of one message type. Paths are field names joined by `.`
/// without list indices. A field listed in `read` or `ignored` is accepted whole; a field that
/// is a prefix of a listed path is walked into; any other field that is set is refused.
#[derive(Debug)]
pub struct Rules {
    /// The message's full protobuf name.
    pub message: &'static str,
    /// Fields weir translates (their values checked by the translator).
    pub read: &'static [&'static str],
    /// Fields that change nothing for weir, each with why.
    pub ignored: &'static [(&'static str, &'static str)],
}

impl Rules {
    /// The descriptor of the message these rules are for.
    pub fn descriptor(&self) -> MessageDescriptor {
        pool()
            .get_message_by_name(self.message)
            .unwrap_or_else(|| panic!("{} is not in the built-in descriptors", self.message))
    }

    fn accepts(&self, path: &str) -> bool {
        self.read.contains(&path) || self.ignored.iter().any(|(p, _)| *p == path)
    }

    fn walks_into(&self, path: &str) -> bool {
        let under = |p: &str| {
            p.len() > path.len() && p.starts_with(path) && p.as_bytes()[path.len()] == b'.'
        };
        self.read.iter().any(|p| under(p)) || self.ignored.iter().any(|(p, _)| under(p))
    }

    /// Decodes `bytes` as this message and checks that weir reads or ignores every field set.
    pub fn audit_bytes(&self, bytes: &[u8]) -> Result<(), Refusal> {
        let msg = DynamicMessage::decode(self.descriptor(), bytes)
            .map_err(|e| Refusal::new("", format!("not a valid {}: {e}", self.message)))?;
        self.audit(&msg)
    }

    /// Checks that weir reads or ignores every field set in `msg`.
    pub fn audit(&self, msg: &DynamicMessage) -> Result<(), Refusal> {
        self.walk(msg, "", "")
    }

    fn walk(&self, msg: &DynamicMessage, pattern: &str, shown: &str) -> Result<(), Refusal> {
        if let Some(u) = msg.unknown_fields().next() {
            return Err(Refusal::new(
                shown,
                format!(
                    "field number {} of {} is not in weir's Envoy API (a newer Envoy's field?)",
                    u.number(),
                    msg.descriptor().full_name()
                ),
            ));
        }
        for (field, value) in msg.fields() {
            let path = join(pattern, field.name());
            let here = join(shown, field.name());
            if self.accepts(&path) {
                continue;
            }
            if !self.walks_into(&path) {
                return Err(Refusal::new(here, "weir does not implement this field"));
            }
            match value {
                Value::Message(m) => self.walk(m, &path, &here)?,
                Value::List(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Value::Message(m) = item {
                            self.walk(m, &path, &format!("{here}[{i}]"))?;
                        }
                    }
                }
                _ => return Err(Refusal::new(here, "weir does not implement this field")),
            }
        }
        Ok(())
    }

    /// Every path these rules name, for checking them against the descriptors.
    pub fn paths(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.read.iter().copied().chain(self.ignored.iter().map(|(p, _)| *p))
    }
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}.{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptors_describe_the_types_weir_decodes() {
        use prost::Name;
        for name in [
            envoy_types::pb::envoy::config::listener::v3::Listener::full_name(),
            envoy_types::pb::envoy::config::cluster::v3::Cluster::full_name(),
            envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::full_name(),
            envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy::full_name(),
            envoy_types::pb::envoy::extensions::filters::udp::udp_proxy::v3::UdpProxyConfig::full_name(),
        ] {
            assert!(pool().get_message_by_name(&name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn a_set_field_outside_the_rules_is_refused_by_its_path() {
        use envoy_types::pb::envoy::config::cluster::v3::Cluster;
        use prost::Message;
        static RULES: Rules =
            Rules { message: "envoy.config.cluster.v3.Cluster", read: &["name"], ignored: &[] };
        let ok = Cluster { name: "a".into(), ..Default::default() };
        assert_eq!(RULES.audit_bytes(&ok.encode_to_vec()), Ok(()));
        let bad = Cluster { name: "a".into(), alt_stat_name: "x".into(), ..Default::default() };
        let r = RULES.audit_bytes(&bad.encode_to_vec()).unwrap_err();
        assert_eq!(r.field, "alt_stat_name");
    }
}
