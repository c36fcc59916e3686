//! `weir import --envoy-config-dump FILE`: an Envoy `/config_dump` (what Envoy's admin API and
//! `istioctl proxy-config all -o json` write) through the same translation as xDS, to a report
//! per resource and weir's YAML for what it accepted.

use super::audit::message_for_type_url;
use super::resources::{self, CLUSTER, LISTENER, LOAD_ASSIGNMENT};
use super::Resources;
use prost::Message;
use prost_reflect::DynamicMessage;
use serde::Serialize;
use serde_json::Value;

/// What became of one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `listener`, `cluster`, `load_assignment`, or the dump section for what weir does not
    /// read (`route_configuration`, `secret`, …).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// `accepted`, `refused`, `waiting` (accepted, but held back: what for is in `reason`) or
    /// `not_read`.
    pub status: &'static str,
    /// Why it was refused, held back or not read; empty when accepted.
    pub reason: String,
}

/// The outcome of an import.
#[derive(Clone, Debug)]
pub struct Import {
    /// One verdict per resource, in the dump's order.
    pub verdicts: Vec<Verdict>,
    /// weir's YAML: the services and clusters accepted.
    pub yaml: String,
}

impl Import {
    /// Verdicts of one status.
    pub fn count(&self, status: &str) -> usize {
        self.verdicts.iter().filter(|v| v.status == status).count()
    }

    /// The report as text, one line per resource and a total.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for v in &self.verdicts {
            s.push_str(&format!("{:<8} {:<15} {}", v.status, v.kind, v.name));
            if !v.reason.is_empty() {
                s.push_str(&format!(": {}", v.reason));
            }
            s.push('\n');
        }
        s.push_str(&format!(
            "{} accepted, {} waiting, {} refused, {} not read\n",
            self.count("accepted"),
            self.count("waiting"),
            self.count("refused"),
            self.count("not_read")
        ));
        s
    }
}

/// Reads an Envoy config dump (JSON) and translates what it holds.
pub fn config_dump(json: &str) -> anyhow::Result<Import> {
    let dump: Value = serde_json::from_str(json).map_err(|e| anyhow::anyhow!("not JSON: {e}"))?;
    // A whole ConfigDump has `configs`; a single section (RoutesConfigDump, say) is accepted
    // as it is.
    let sections: Vec<&Value> = match dump.get("configs") {
        Some(Value::Array(c)) => c.iter().collect(),
        Some(_) => anyhow::bail!("`configs` is not a list"),
        None if dump.get("@type").is_some() => vec![&dump],
        None => anyhow::bail!("neither an Envoy config dump (`configs`) nor one of its sections"),
    };
    let mut verdicts = Vec::new();
    let mut held = Resources::default();
    // Resources first, then put together: listeners refer to clusters, clusters to endpoints.
    let mut order: Vec<(usize, &'static str, String)> = Vec::new();
    for section in sections {
        let section_type = section.get("@type").and_then(Value::as_str).unwrap_or("");
        let section_name = section_type.rsplit('.').next().unwrap_or(section_type);
        let found = |lists: &[&str], inner: &[&str]| -> Vec<&Value> {
            let mut out = Vec::new();
            for list in lists {
                for item in section.get(*list).and_then(Value::as_array).into_iter().flatten() {
                    let mut v = item;
                    for key in inner {
                        match v.get(*key) {
                            Some(next) => v = next,
                            None => break,
                        }
                    }
                    out.push(v);
                }
            }
            out
        };
        match section_name {
            "ListenersConfigDump" => {
                for l in found(&["static_listeners"], &["listener"]) {
                    take(l, LISTENER, &mut verdicts, &mut held, &mut order);
                }
                for d in
                    section.get("dynamic_listeners").and_then(Value::as_array).into_iter().flatten()
                {
                    // The active state is what serves; a listener only warming or draining
                    // is reported so.
                    match d.get("active_state").and_then(|a| a.get("listener")) {
                        Some(l) => take(l, LISTENER, &mut verdicts, &mut held, &mut order),
                        None => verdicts.push(Verdict {
                            kind: "listener".into(),
                            name: d.get("name").and_then(Value::as_str).unwrap_or("").into(),
                            status: "not_read",
                            reason: "no active state in the dump (warming, draining or in error)"
                                .into(),
                        }),
                    }
                }
            }
            "ClustersConfigDump" => {
                for c in found(
                    &["static_clusters", "dynamic_active_clusters", "dynamic_warming_clusters"],
                    &["cluster"],
                ) {
                    take(c, CLUSTER, &mut verdicts, &mut held, &mut order);
                }
            }
            "EndpointsConfigDump" => {
                for a in found(
                    &["static_endpoint_configs", "dynamic_endpoint_configs"],
                    &["endpoint_config"],
                ) {
                    take(a, LOAD_ASSIGNMENT, &mut verdicts, &mut held, &mut order);
                }
            }
            "RoutesConfigDump" => {
                for r in
                    found(&["static_route_configs", "dynamic_route_configs"], &["route_config"])
                {
                    verdicts.push(not_read(
                        "route_configuration",
                        r,
                        "HTTP routes: weir proxies at L4 (HTTP routing comes with L7)",
                    ));
                }
            }
            "SecretsConfigDump" => {
                for s in found(
                    &["static_secrets", "dynamic_active_secrets", "dynamic_warming_secrets"],
                    &[],
                ) {
                    verdicts.push(not_read("secret", s, "TLS: weir forwards the client's bytes"));
                }
            }
            "BootstrapConfigDump" => verdicts.push(Verdict {
                kind: "bootstrap".into(),
                name: String::new(),
                status: "not_read",
                reason: "weir's own file bootstraps it; its static resources are in the other \
                         sections"
                    .into(),
            }),
            _ => verdicts.push(Verdict {
                kind: section_name.to_owned(),
                name: String::new(),
                status: "not_read",
                reason: format!("section {section_type}: nothing weir reads"),
            }),
        }
    }
    let assembled = held.assemble(|_| true);
    // A translated listener or cluster held back says what for.
    for w in &assembled.waiting {
        if let Some(&(i, _, _)) = order.iter().find(|(_, k, n)| *k == w.kind && *n == w.name) {
            verdicts[i].status = "waiting";
            verdicts[i].reason = format!("waits for {}", w.reason);
        }
    }
    #[derive(Serialize)]
    struct Fragment<'a> {
        services: &'a [crate::config::ServiceConfig],
        clusters: &'a [crate::config::ClusterConfig],
    }
    let body = serde_saphyr::to_string(&Fragment {
        services: &assembled.services,
        clusters: &assembled.clusters,
    })
    .map_err(|e| anyhow::anyhow!("writing YAML: {e}"))?;
    let yaml = format!(
        "# weir services and clusters from an Envoy config dump ({} services, {} clusters):\n\
         # merge them into a configuration with ports, routes and workers.\n{body}",
        assembled.services.len(),
        assembled.clusters.len()
    );
    Ok(Import { verdicts, yaml })
}

fn not_read(kind: &str, v: &Value, reason: &str) -> Verdict {
    let name = v.get("name").and_then(Value::as_str).unwrap_or("");
    Verdict { kind: kind.into(), name: name.into(), status: "not_read", reason: reason.into() }
}

/// Translates one resource (JSON, an `Any` with `@type`) of the type `want`.
fn take(
    json: &Value,
    want: &'static str,
    verdicts: &mut Vec<Verdict>,
    held: &mut Resources,
    order: &mut Vec<(usize, &'static str, String)>,
) {
    let kind = match want {
        LISTENER => "listener",
        CLUSTER => "cluster",
        _ => "load_assignment",
    };
    let mut name = json
        .get(if want == LOAD_ASSIGNMENT { "cluster_name" } else { "name" })
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if name.is_empty() {
        // An unnamed static listener: ADDRESS_PORT, as the translation names it.
        let s = json.get("address").and_then(|a| a.get("socket_address"));
        if let Some(s) = s {
            let part = |k: &str| {
                s.get(k).map_or(String::new(), |v| v.as_str().map_or(v.to_string(), str::to_owned))
            };
            name = format!("{}_{}", part("address"), part("port_value"));
        }
    }
    let verdict = |status: &'static str, name: &str, reason: String| Verdict {
        kind: kind.into(),
        name: name.to_owned(),
        status,
        reason,
    };
    let bytes = match any_from_json(json, want) {
        Ok(b) => b,
        Err(e) => {
            verdicts.push(verdict("refused", &name, e));
            return;
        }
    };
    let outcome = match want {
        LISTENER => resources::listener(&bytes).map(|l| {
            name.clone_from(&l.service.name);
            held.listeners.insert(name.clone(), l);
        }),
        CLUSTER => resources::cluster(&bytes).map(|c| {
            held.clusters.insert(name.clone(), c);
        }),
        _ => resources::load_assignment(&bytes).map(|a| {
            held.assignments.insert(name.clone(), a);
        }),
    };
    match outcome {
        Ok(()) => {
            order.push((verdicts.len(), kind, name.clone()));
            verdicts.push(verdict("accepted", &name, String::new()));
        }
        Err(r) => verdicts.push(verdict("refused", &name, r.to_string())),
    }
}

/// The protobuf bytes of a resource in proto3 JSON form with its `@type`.
fn any_from_json(json: &Value, want: &str) -> Result<Vec<u8>, String> {
    let type_url = json.get("@type").and_then(Value::as_str).unwrap_or(want);
    if type_url != want {
        return Err(format!("type {type_url} where {want} was expected"));
    }
    let desc = message_for_type_url(type_url).ok_or_else(|| format!("unknown type {type_url}"))?;
    let mut body = json.clone();
    if let Value::Object(m) = &mut body {
        m.remove("@type");
    }
    let msg = DynamicMessage::deserialize(desc, body).map_err(|e| {
        // An extension (typed_config) of a type Envoy's API does not describe lands here too.
        format!("does not read as {type_url}: {e}")
    })?;
    Ok(msg.encode_to_vec())
}
