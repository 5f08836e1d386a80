//! Who the caller is, as the middleware found out and the handlers read it from a call's
//! extensions: its [`Principal`] (put there by authentication; [`ANONYMOUS`] when there is no
//! authentication) and its [`Grants`] (put there by authorization: the provider instances it
//! may use). How callers are authenticated and authorized is `middleware`'s; this module holds
//! only what both sides share.

use std::sync::Arc;

use globset::GlobSet;

/// The principal of a caller, put into the request extensions by authentication.
#[derive(Clone, Debug)]
pub struct Principal(pub Arc<str>);

/// The principal of unauthenticated callers.
pub const ANONYMOUS: &str = "anonymous";

/// The provider instances a call may use: those of every rule that granted its method.
#[derive(Clone)]
pub struct Grants {
    // None: no authorization configured (auth mode none).
    providers: Option<Arc<Vec<Arc<GlobSet>>>>,
}

impl Grants {
    /// Everything (auth mode none).
    pub fn all() -> Self {
        Grants { providers: None }
    }

    /// The instances matching any of `providers`, the provider globs of the rules that
    /// granted the call.
    pub fn any_of(providers: Vec<Arc<GlobSet>>) -> Self {
        Grants {
            providers: Some(Arc::new(providers)),
        }
    }

    /// Whether the call may use provider instance `id`.
    pub fn allows(&self, id: &str) -> bool {
        self.providers
            .as_ref()
            .is_none_or(|sets| sets.iter().any(|set| set.is_match(id)))
    }
}
