//! The upstreams as every relay worker shares them: built once from the configuration, with each one's
//! admission gate and circuit breaker, and the routing table over them.

use std::sync::Arc;

use rustls::RootCertStore;

use crate::config::{RouteSpec, UpstreamSpec};
use crate::conn::tls;
use crate::relay::UpstreamTarget;
use crate::relay::admission::{AdmissionLimits, Gate};
use crate::relay::health::{BreakerPolicy, Health};
use crate::relay::routes::Router;

/// Each upstream as the workers share it (with the roots its certificates must chain to, for `https`),
/// and the routing table over them.
#[allow(clippy::type_complexity)]
pub(super) fn upstream_targets(
    specs: &[UpstreamSpec],
    routes: &[RouteSpec],
    generate: Option<&str>,
    (admission, breaker): (AdmissionLimits, BreakerPolicy),
) -> Result<
    (
        Vec<(Arc<UpstreamTarget>, Option<Arc<RootCertStore>>)>,
        Router,
    ),
    String,
> {
    let index = |name: &str| {
        specs
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| format!("no upstream named {name:?}"))
    };
    let mut targets = Vec::new();
    for spec in specs {
        log::info!(
            "upstream {}: the {} API at {}",
            spec.name,
            spec.provider,
            spec.origin
        );
        let (tls_name, roots) = match spec.origin.tls {
            true => (
                Some(tls::server_name(&spec.origin.host)?),
                Some(Arc::new(tls::root_store(spec.ca.as_deref())?)),
            ),
            false => (None, None),
        };
        let fallback = match &spec.fallback {
            Some(name) if *name == spec.name => {
                return Err(format!(
                    "upstream {:?} cannot be its own fallback",
                    spec.name
                ));
            }
            Some(name) => Some(index(name)?),
            None => None,
        };
        let target = UpstreamTarget {
            name: spec.name.clone(),
            provider: spec.provider,
            origin: spec.origin.clone(),
            key: spec.key.clone(),
            default_model: spec.model.clone(),
            tls_name,
            gate: Gate::new(spec.admission.unwrap_or(admission)),
            health: Health::new(breaker),
            fallback,
        };
        targets.push((Arc::new(target), roots));
    }
    if targets.is_empty() {
        return Err("no upstream is configured".into());
    }
    let prefixes = routes
        .iter()
        .map(|r| Ok((r.prefix.clone(), index(&r.upstream)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let generate = generate.map(index).transpose()?.unwrap_or(0);
    let providers = specs.iter().map(|s| s.provider).collect();
    Ok((targets, Router::new(providers, prefixes, generate)))
}
