//! Who the caller is, as the middleware found out and the handlers read it from a call's
//! extensions: its [`Principal`] (put there by authentication; [`ANONYMOUS`] when there is no
//! authentication) and its [`Grants`] (put there by authorization: the provider instances it
//! may use, and those on which it reaches other principals' operations). How callers are
//! authenticated and authorized is `middleware`'s; this module holds only what both sides
//! share.

use std::sync::Arc;

use globset::GlobSet;

/// The principal of a caller, put into the request extensions by authentication.
#[derive(Clone, Debug)]
pub struct Principal(pub Arc<str>);

/// The principal of unauthenticated callers.
pub const ANONYMOUS: &str = "anonymous";

/// The provider instances a call may use: those of every rule that granted its method; and
/// those on which it reaches every principal's operations, not only its own.
#[derive(Clone)]
pub struct Grants {
    // None: no authorization configured (auth mode none).
    providers: Option<Arc<Vec<Arc<GlobSet>>>>,
    // The provider globs of the granting rules with `operations = "all"`; None: none (or,
    // without authorization, everything).
    every_operation: Option<Arc<Vec<Arc<GlobSet>>>>,
}

impl Grants {
    /// Everything (auth mode none).
    pub fn all() -> Self {
        Grants {
            providers: None,
            every_operation: None,
        }
    }

    /// The instances matching any of `providers`, the provider globs of the rules that
    /// granted the call; the caller's own operations only.
    pub fn any_of(providers: Vec<Arc<GlobSet>>) -> Self {
        Grants {
            providers: Some(Arc::new(providers)),
            every_operation: None,
        }
    }

    /// Also every principal's operations on the instances matching any of `providers` (the
    /// granting rules with `operations = "all"`).
    pub fn with_every_operation(mut self, providers: Vec<Arc<GlobSet>>) -> Self {
        if self.providers.is_some() && !providers.is_empty() {
            self.every_operation = Some(Arc::new(providers));
        }
        self
    }

    /// Whether the call reaches the operations of other principals on provider instance `id`.
    pub fn every_operation_on(&self, id: &str) -> bool {
        match (&self.providers, &self.every_operation) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(_), Some(sets)) => sets.iter().any(|set| set.is_match(id)),
        }
    }

    /// Whether the call reaches the operations of other principals on some instance.
    pub fn every_operation_anywhere(&self) -> bool {
        self.providers.is_none() || self.every_operation.is_some()
    }

    /// Whether the call may use provider instance `id`.
    pub fn allows(&self, id: &str) -> bool {
        self.providers
            .as_ref()
            .is_none_or(|sets| sets.iter().any(|set| set.is_match(id)))
    }
}
