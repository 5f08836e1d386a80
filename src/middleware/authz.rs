//! Authorization: what a principal may do. `[[authorization]]` rules grant globs of methods
//! and of provider instances to globs of principals; anything not granted is denied. This layer
//! checks the method and leaves the provider globs of the granting rules in the extensions as
//! [`Grants`], for the handlers, which alone know a call's provider once they parsed its name.
//! Denials name what was denied, never whether a resource exists. A rule's `operations`
//! (`own` or `all`) says whose operations its OperationService methods reach, also in the
//! [`Grants`].

use std::sync::Arc;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};

use super::gate::{Gate, GateLayer, Gated};
use super::{is_public, method_names};
use crate::config::{AuthMode, AuthorizationRule, ConfigError, OperationScope};
use crate::error::{Error, Kind};
use crate::identity::{ANONYMOUS, Grants, Principal};

struct Rule {
    principal: GlobMatcher,
    methods: GlobSet,
    // Whether `methods` matches each served method, by `ServedMethod::index`: decided once,
    // so that a call to a served method runs no glob against its name.
    served: Vec<bool>,
    // Shared with the Grants of every call it admits: cloning a GlobSet copies its matchers.
    providers: Arc<GlobSet>,
    // `operations = "all"`: every principal's operations on `providers`, not only the caller's.
    every_operation: bool,
}

/// The compiled `[[authorization]]` rules.
pub struct Authorizer {
    enabled: bool,
    public: Vec<String>,
    rules: Vec<Rule>,
}

fn glob_set(field: &str, globs: &[String]) -> Result<GlobSet, ConfigError> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(Glob::new(glob).map_err(|e| {
            ConfigError::Invalid(format!("[[authorization]] {field}: {glob:?}: {e}"))
        })?);
    }
    builder
        .build()
        .map_err(|e| ConfigError::Invalid(format!("[[authorization]] {field}: {e}")))
}

impl Authorizer {
    /// Compiles the rules; with auth mode `none` everything is allowed.
    pub fn from_config(
        mode: AuthMode,
        public: &[String],
        rules: &[AuthorizationRule],
    ) -> Result<Self, ConfigError> {
        let rules = rules
            .iter()
            .map(|rule| {
                let methods = glob_set("methods", &rule.methods)?;
                let served = crate::methods::served_methods()
                    .iter()
                    .map(|m| methods.is_match(&m.full) || methods.is_match(&m.short))
                    .collect();
                Ok(Rule {
                    principal: Glob::new(&rule.principal)
                        .map_err(|e| {
                            ConfigError::Invalid(format!(
                                "[[authorization]] principal {:?}: {e}",
                                rule.principal
                            ))
                        })?
                        .compile_matcher(),
                    methods,
                    served,
                    providers: Arc::new(glob_set("providers", &rule.providers)?),
                    every_operation: rule.operations == OperationScope::All,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Authorizer {
            enabled: mode != AuthMode::None,
            public: public.to_vec(),
            rules,
        })
    }

    /// The grants of `principal` calling `path`, or PERMISSION_DENIED.
    pub fn authorize(&self, principal: &str, path: &str) -> Result<Grants, Error> {
        if !self.enabled || is_public(&self.public, path) {
            return Ok(Grants::all());
        }
        let served = crate::methods::served(path);
        // A method no service serves: its names, split from the path once for every rule.
        let unserved = served.is_none().then(|| method_names(None, path));
        let mut granted = Vec::new();
        // The rules among them with `operations = "all"`; usually none, and then no allocation.
        let mut every_operation = Vec::new();
        for rule in self
            .rules
            .iter()
            .filter(|r| match (served, &unserved) {
                (Some(method), _) => r.served[method.index],
                (None, Some((full, short))) => {
                    r.methods.is_match(&**full) || r.methods.is_match(&**short)
                }
                (None, None) => false,
            })
            .filter(|r| r.principal.is_match(principal))
        {
            granted.push(Arc::clone(&rule.providers));
            if rule.every_operation {
                every_operation.push(Arc::clone(&rule.providers));
            }
        }
        if granted.is_empty() {
            let (_, short) = method_names(served, path);
            return Err(Error::new(
                Kind::PermissionDenied,
                format!("{principal} may not call {short}"),
            ));
        }
        Ok(Grants::any_of(granted).with_every_operation(every_operation))
    }
}

impl Gate for Authorizer {
    fn admit(
        &self,
        path: &str,
        _headers: &http::HeaderMap,
        extensions: &mut http::Extensions,
    ) -> Result<(), Error> {
        let principal = extensions.get::<Principal>().map_or(ANONYMOUS, |p| &p.0);
        let grants = self.authorize(principal, path).inspect_err(|_| {
            tracing::info!(%principal, path, "call denied");
        })?;
        extensions.insert(grants);
        Ok(())
    }
}

/// Checks the method of every call.
pub type AuthzLayer = GateLayer<Authorizer>;

/// The service of [`AuthzLayer`].
pub type Authz<S> = Gated<S, Authorizer>;

#[cfg(test)]
mod tests {
    use super::*;

    fn authorizer(methods: &[&str]) -> Authorizer {
        Authorizer::from_config(
            AuthMode::ApiKey,
            &["grpc.health.v1.Health".to_string()],
            &[AuthorizationRule {
                principal: "reader*".into(),
                methods: methods.iter().map(|m| m.to_string()).collect(),
                providers: vec!["kvs-*".into()],
                operations: OperationScope::Own,
            }],
        )
        .unwrap()
    }

    fn denial(result: Result<Grants, Error>) -> String {
        match result {
            Ok(_) => panic!("allowed"),
            Err(e) => {
                assert_eq!(e.kind(), Kind::PermissionDenied);
                e.message().to_string()
            }
        }
    }

    #[test]
    fn served_methods_match_short_and_full_globs_decided_at_start() {
        let authz = authorizer(&["StreamService/Get*", "streamgate.v1.ProviderService/*"]);
        let grants = authz
            .authorize("reader-1", "/streamgate.v1.StreamService/GetStream")
            .unwrap();
        assert!(grants.allows("kvs-eu") && !grants.allows("vod"));
        assert!(
            authz
                .authorize("reader-1", "/streamgate.v1.ProviderService/GetProvider")
                .is_ok()
        );
        assert_eq!(
            denial(authz.authorize("reader-1", "/streamgate.v1.StreamService/DeleteStream")),
            "reader-1 may not call StreamService/DeleteStream"
        );
        assert_eq!(
            denial(authz.authorize("writer", "/streamgate.v1.StreamService/GetStream")),
            "writer may not call StreamService/GetStream"
        );
        // Public services need no grant.
        assert!(
            authz
                .authorize("writer", "/grpc.health.v1.Health/Check")
                .is_ok()
        );
    }

    #[test]
    fn operations_all_reaches_others_operations_on_its_providers_only() {
        let rule = |principal: &str, providers: &str, operations| AuthorizationRule {
            principal: principal.into(),
            methods: vec!["OperationService/*".into()],
            providers: vec![providers.into()],
            operations,
        };
        let authz = Authorizer::from_config(
            AuthMode::ApiKey,
            &[],
            &[
                rule("auditor", "kvs-*", OperationScope::All),
                rule("*", "*", OperationScope::Own),
            ],
        )
        .unwrap();
        let path = "/streamgate.v1.OperationService/GetOperation";
        let auditor = authz.authorize("auditor", path).unwrap();
        assert!(auditor.every_operation_anywhere());
        assert!(auditor.every_operation_on("kvs-eu") && !auditor.every_operation_on("local"));
        assert!(auditor.allows("local"), "its own, through the second rule");
        let other = authz.authorize("ingest", path).unwrap();
        assert!(!other.every_operation_anywhere() && !other.every_operation_on("kvs-eu"));
        assert!(Grants::all().every_operation_on("local"), "auth mode none");
    }

    #[test]
    fn methods_no_service_serves_are_matched_against_their_path() {
        assert_eq!(
            denial(authorizer(&["StreamService/*"]).authorize("reader", "/x.Made/Up")),
            "reader may not call Made/Up"
        );
        // Let through, they end UNIMPLEMENTED at the router.
        assert!(authorizer(&["*"]).authorize("reader", "/x.Made/Up").is_ok());
        assert!(
            authorizer(&["Made/*"])
                .authorize("reader", "/x.Made/Up")
                .is_ok()
        );
    }
}
