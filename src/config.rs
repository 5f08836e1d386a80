//! Typed configuration (docs/design.md §4): a TOML file, then environment overrides, then
//! flags. Plain data and the checks of its values; the runtime objects made from it (the
//! security layers' rules, the TLS configuration, the OpenTelemetry settings, the providers)
//! are built once, and checked by being built, by `server::Parts::build`, which serving and
//! `check-config` share.
//!
//! The loader takes the environment as a map, so tests never touch the process environment.
//! Environment variables read:
//! - `STREAMGATE_CONFIG`: the TOML file, when `--config` is not given.
//! - `STREAMGATE_LISTEN`: overrides `[server] listen`.
//! - `STREAMGATE_WORKER_THREADS`: overrides `[server] worker_threads`.
//! - `STREAMGATE_STORE_URL`: overrides `[store] url`.
//! - `STREAMGATE_LOG_FORMAT`: overrides `[telemetry] log_format` (`text` or `json`).
//! - `STREAMGATE_LOG`: overrides `[telemetry] log_filter` (tracing's env-filter syntax).
//! - `STREAMGATE_METRICS_LISTEN`: overrides `[telemetry] metrics_listen`.
//! - `OTEL_*`: trace and metric export, read and checked by `telemetry::otel`.
//!
//! Kind-specific keys of a `[[providers]]` entry stay in [`ProviderConfig::settings`] and are
//! parsed by the adapter's own `config.rs`. `Debug` never prints a setting's value nor the
//! password of a store URL.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::domain::names::check_provider_id;

/// The default lease of an operation (`[store] operation_lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The most worker threads `[server] worker_threads` may ask for.
pub const MAX_WORKERS: usize = 1024;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("{0}")]
    Parse(String),
    /// The values are inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[store]`.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[[providers]]`.
    #[serde(default = "default_providers")]
    pub providers: Vec<ProviderConfig>,
    /// `[auth]`.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[[authorization]]`.
    #[serde(default)]
    pub authorization: Vec<AuthorizationRule>,
    /// `[rate_limits]`; none when absent.
    #[serde(default)]
    pub rate_limits: Option<RateLimitConfig>,
    /// `[telemetry]`.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The process environment the configuration was loaded with, for adapters that read
    /// their provider's standard variables (e.g. `ALIBABA_CLOUD_ACCESS_KEY_ID`).
    #[serde(skip)]
    pub environment: Environment,
}

/// Environment variables, as a map. `Debug` shows the names only: values may be secrets.
#[derive(Clone, Default)]
pub struct Environment(pub HashMap<String, String>);

impl Environment {
    /// The value of `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.0.keys().collect();
        names.sort();
        f.debug_tuple("Environment").field(&names).finish()
    }
}

/// The value of a variable that is set and not empty (an empty one counts as unset, as for
/// the `OTEL_*` and credential variables).
fn set<'a>(env: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    env.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// `[server]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The gRPC address (default `127.0.0.1:50051`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// How long in-flight calls may take to finish after SIGTERM (default `10s`).
    #[serde(default = "default_drain", deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
    /// The deadline of a unary call whose caller sends none (default `75s`).
    #[serde(default = "default_deadline", deserialize_with = "de_duration")]
    pub default_deadline: Duration,
    /// Calls in flight at most; more are shed with RESOURCE_EXHAUSTED (default 1024).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Calls in flight at most per principal, so that one caller cannot hold every permit
    /// of `max_in_flight`; more are refused with RESOURCE_EXHAUSTED (default 256).
    #[serde(default = "default_max_in_flight_per_principal")]
    pub max_in_flight_per_principal: usize,
    /// Long-lived calls (WatchStream, reflection) open at most per principal, counted until
    /// they end (default 100).
    #[serde(default = "default_max_streams")]
    pub max_streams_per_principal: usize,
    /// Long-lived calls (health Watch included) open at most per connection (default 100).
    #[serde(default = "default_max_streams")]
    pub max_streams_per_connection: usize,
    /// `grpc.health.v1.Health/Watch` calls open at most in all: they need no credentials, so
    /// they are bounded together rather than per principal (default 1000).
    #[serde(default = "default_max_health_watches")]
    pub max_health_watches: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: calls a client may have open at once on one
    /// connection, the rest wait in the client (default 200).
    #[serde(default = "default_http2_max_concurrent_streams")]
    pub http2_max_concurrent_streams: u32,
    /// How often an HTTP/2 ping checks that a connection's peer is still there; `0s`: never
    /// (default `30s`).
    #[serde(
        default = "default_keepalive_interval",
        deserialize_with = "de_duration"
    )]
    pub http2_keepalive_interval: Duration,
    /// How long a ping may wait for its answer before the connection is closed (default `20s`).
    #[serde(
        default = "default_keepalive_timeout",
        deserialize_with = "de_duration"
    )]
    pub http2_keepalive_timeout: Duration,
    /// How long a connection lives before the server asks its client to go elsewhere (GOAWAY;
    /// an idle connection then closes at once); `0s`: forever (default `1h`).
    #[serde(
        default = "default_max_connection_age",
        deserialize_with = "de_duration"
    )]
    pub max_connection_age: Duration,
    /// How long the calls of a connection past its age may still run before it is closed
    /// (default `5m`).
    #[serde(
        default = "default_max_connection_age_grace",
        deserialize_with = "de_duration"
    )]
    pub max_connection_age_grace: Duration,
    /// How long a WatchStream waits at most for its stream's initial state (and no longer than
    /// its caller's deadline): a read whose turn under the outbound limit would come later is
    /// answered RESOURCE_EXHAUSTED / PROVIDER_THROTTLED at once; one that has not ended by
    /// then, UNAVAILABLE (default `10s`; more than zero).
    #[serde(
        default = "default_watch_initial_read_timeout",
        deserialize_with = "de_duration"
    )]
    pub watch_initial_read_timeout: Duration,
    /// The runtime's worker threads; 0 (the default): one per core this process may use; at
    /// most [`MAX_WORKERS`]. One worker means tokio's current-thread scheduler (see the
    /// `runtime` module).
    #[serde(default)]
    pub worker_threads: usize,
    /// `[server.tls]`: TLS on the gRPC listener, and client certificates (mTLS). Plaintext
    /// when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's PEM certificate chain.
    pub cert_file: PathBuf,
    /// The server's PEM private key.
    pub key_file: PathBuf,
    /// A PEM bundle of the CAs that sign client certificates. When set, clients present a
    /// certificate signed by one of them (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Accept TLS connections without a client certificate (default false). Calls on such a
    /// connection are then refused UNAUTHENTICATED in mode `mtls`, except to public services
    /// (e.g. health checks by a prober that has no certificate).
    #[serde(default)]
    pub client_auth_optional: bool,
}

fn default_deadline() -> Duration {
    Duration::from_secs(75)
}

fn default_max_in_flight() -> usize {
    1024
}

fn default_max_in_flight_per_principal() -> usize {
    256
}

fn default_max_streams() -> usize {
    100
}

fn default_max_health_watches() -> usize {
    1000
}

fn default_http2_max_concurrent_streams() -> u32 {
    200
}

fn default_keepalive_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_max_connection_age() -> Duration {
    Duration::from_secs(3600)
}

fn default_max_connection_age_grace() -> Duration {
    Duration::from_secs(300)
}

fn default_watch_initial_read_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[store]`.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://…` (default
    /// `sqlite://data/streamgate.db`).
    #[serde(default = "default_store_url")]
    pub url: String,
    /// How long an unfinished operation stays with the process driving it without a renewal
    /// (renewed every third of it); after that another process sharing the store adopts it
    /// (default `30s`).
    #[serde(default = "default_lease", deserialize_with = "de_duration")]
    pub operation_lease: Duration,
    /// PostgreSQL: the connections this process opens at most (default 10). SQLite uses one.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a statement waits for a connection of the pool (a free one, or a new one the
    /// database accepts) before it fails with STORE_UNAVAILABLE (default `2s`).
    #[serde(default = "default_acquire_timeout", deserialize_with = "de_duration")]
    pub acquire_timeout: Duration,
    /// The longest one statement may run: PostgreSQL's `statement_timeout` on every connection;
    /// on SQLite, how long a statement waits for another's write lock (default `10s`).
    #[serde(
        default = "default_statement_timeout",
        deserialize_with = "de_duration"
    )]
    pub statement_timeout: Duration,
    /// How long a finished operation is kept after it finished (default `30d`); then the
    /// retention sweep deletes it, and its request_id may be used again. Unfinished operations
    /// are never deleted.
    #[serde(
        default = "default_operation_retention",
        deserialize_with = "de_duration"
    )]
    pub operation_retention: Duration,
    /// How long audit records (calls and final outcomes) are kept (default `400d`).
    #[serde(default = "default_audit_retention", deserialize_with = "de_duration")]
    pub audit_retention: Duration,
}

fn default_lease() -> Duration {
    DEFAULT_LEASE
}

fn default_max_connections() -> u32 {
    10
}

fn default_acquire_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_statement_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_operation_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_audit_retention() -> Duration {
    Duration::from_secs(400 * 24 * 3600)
}

/// `[auth]`: who may call.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` (callers are anonymous; loopback only), `api-key` or `jwt` (a bearer token in
    /// the `authorization` metadata), or `mtls` (the client certificate; needs
    /// `[server.tls] client_ca_file`).
    #[serde(default)]
    pub mode: AuthMode,
    /// Services callable without credentials (default: `grpc.health.v1.Health`).
    #[serde(default = "default_public")]
    pub public: Vec<String>,
    /// `[[auth.api_keys]]`: the keys of mode `api-key`, stored as SHA-256 hashes.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// `[auth.jwt]`: how tokens of mode `jwt` are checked.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// The environment variable holding the key that signs page tokens (default
    /// `STREAMGATE_PAGE_TOKEN_KEY`); unset, each process draws a key of its own.
    #[serde(default = "default_page_token_key_env")]
    pub page_token_key_env: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::None,
            public: default_public(),
            api_keys: Vec::new(),
            jwt: None,
            page_token_key_env: default_page_token_key_env(),
        }
    }
}

/// The fewest bytes a configured page token key may have (HMAC-SHA256's output size).
pub const MIN_PAGE_TOKEN_KEY_LEN: usize = 32;

fn default_page_token_key_env() -> String {
    "STREAMGATE_PAGE_TOKEN_KEY".to_string()
}

impl AuthConfig {
    /// The page token key from the variable `page_token_key_env` names, if it is set; an
    /// error (naming the variable, never its value) when it is shorter than
    /// [`MIN_PAGE_TOKEN_KEY_LEN`] bytes.
    pub fn page_token_key<'a>(
        &self,
        env: &'a Environment,
    ) -> Result<Option<&'a [u8]>, ConfigError> {
        match env.get(&self.page_token_key_env) {
            None => Ok(None),
            Some(key) if key.len() < MIN_PAGE_TOKEN_KEY_LEN => Err(ConfigError::Invalid(format!(
                "[auth] page_token_key_env: {} must hold at least {MIN_PAGE_TOKEN_KEY_LEN} bytes",
                self.page_token_key_env
            ))),
            Some(key) => Ok(Some(key.as_bytes())),
        }
    }
}

fn default_public() -> Vec<String> {
    vec!["grpc.health.v1.Health".to_string()]
}

/// How callers authenticate.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    /// No authentication.
    #[default]
    None,
    /// `authorization: Bearer <key>`, the key's SHA-256 listed in `[[auth.api_keys]]`.
    ApiKey,
    /// `authorization: Bearer <JWT>`, checked per `[auth.jwt]`.
    Jwt,
    /// A client certificate verified against `[server.tls] client_ca_file`; the principal is
    /// its first URI subject alternative name, else its first DNS name.
    Mtls,
}

/// One API key.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who calls with it.
    pub principal: String,
    /// The hex SHA-256 of the key (`printf %s KEY | sha256sum`).
    pub sha256: String,
}

impl fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// `[auth.jwt]`.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The required `iss`.
    pub issuer: String,
    /// The required `aud`.
    pub audience: String,
    /// The claim that names the principal (default `sub`).
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The environment variable holding the HS256 secret, if HS256 tokens are accepted.
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
    /// A JWKS file with the RSA / EC public keys, if tokens signed with those are accepted.
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// How old the keys read from `jwks_file` may get before a token makes the gateway read
    /// the file again (default `"5m"`): a key removed from the file is refused by then.
    #[serde(default = "default_jwks_refresh", deserialize_with = "de_duration")]
    pub jwks_refresh: Duration,
    /// The least time between two reads of `jwks_file` for tokens whose `kid` the keys read
    /// lack (default `"30s"`): such a token makes the gateway read the file at once, but
    /// tokens with made-up `kid`s cannot make it read on every call.
    #[serde(
        default = "default_jwks_min_refresh_interval",
        deserialize_with = "de_duration"
    )]
    pub jwks_min_refresh_interval: Duration,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (default `"30s"`).
    #[serde(default = "default_leeway", deserialize_with = "de_duration")]
    pub leeway: Duration,
    /// The longest lifetime a token may claim: `exp - iat`, or `exp - now` without `iat`
    /// (default `"24h"`).
    #[serde(default = "default_max_lifetime", deserialize_with = "de_duration")]
    pub max_lifetime: Duration,
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("principal_claim", &self.principal_claim)
            .field("hs256_secret_env", &self.hs256_secret_env)
            .field("jwks_file", &self.jwks_file)
            .field("jwks_refresh", &self.jwks_refresh)
            .field("jwks_min_refresh_interval", &self.jwks_min_refresh_interval)
            .field("leeway", &self.leeway)
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

fn default_principal_claim() -> String {
    "sub".to_string()
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_max_lifetime() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_jwks_min_refresh_interval() -> Duration {
    Duration::from_secs(30)
}

/// One `[[authorization]]` rule: what the principals matching `principal` may do. A call is
/// allowed when some matching rule allows its method and (for stream calls) its provider.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRule {
    /// A glob over principals, e.g. `ingest-*`.
    pub principal: String,
    /// Globs over methods, `Service/Method` (`StreamService/Get*`) or with the package.
    pub methods: Vec<String>,
    /// Globs over provider instance ids (default: all).
    #[serde(default = "default_all")]
    pub providers: Vec<String>,
    /// Whose operations on those providers the rule's OperationService methods reach:
    /// `own` (the default: those the caller started) or `all` (everyone's).
    #[serde(default)]
    pub operations: OperationScope,
}

/// The `operations` of an `[[authorization]]` rule.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OperationScope {
    /// The operations the caller started.
    #[default]
    Own,
    /// Every principal's operations.
    All,
}

fn default_all() -> Vec<String> {
    vec!["*".to_string()]
}

/// `[rate_limits]`: calls per second per principal and method (a token bucket each).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The rate of every principal and method no rule names.
    pub per_second: u32,
    /// The burst (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// `[[rate_limits.rules]]`, first match wins.
    #[serde(default)]
    pub rules: Vec<RateLimitRule>,
}

/// One `[[rate_limits.rules]]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// A glob over principals.
    #[serde(default = "default_star")]
    pub principal: String,
    /// A glob over methods (`StreamService/DeleteStream`).
    #[serde(default = "default_star")]
    pub method: String,
    /// Calls per second.
    pub per_second: u32,
    /// The burst (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_star() -> String {
    "*".to_string()
}

/// `[telemetry]`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Which events to log, in tracing's env-filter syntax (default `info`).
    #[serde(default = "default_log_filter")]
    pub log_filter: String,
    /// Where to serve the Prometheus scrape endpoint (`GET /metrics`); none by default.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

/// The log line format.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One `[[providers]]` entry.
#[derive(Deserialize, Clone)]
pub struct ProviderConfig {
    /// The instance id, used in resource names (`providers/{id}`).
    pub id: String,
    /// The kind: `local`, `kinesis-video`, `cloudfront-streaming`, `cloudfront`, `aliyun-vod`.
    pub kind: String,
    /// The provider region, for kinds that have one.
    #[serde(default)]
    pub region: Option<String>,
    /// A different endpoint (e.g. a local emulator).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The kind-specific keys, parsed by the adapter.
    #[serde(flatten)]
    pub settings: toml::Table,
}

impl ProviderConfig {
    /// Parses the kind-specific keys into the adapter's settings type.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        T::deserialize(toml::Value::Table(self.settings.clone())).map_err(|e| {
            ConfigError::Invalid(format!(
                "provider {:?} (kind {}): {}",
                self.id,
                self.kind,
                e.to_string().trim()
            ))
        })
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("settings", &self.settings.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field("operation_lease", &self.operation_lease)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("operation_retention", &self.operation_retention)
            .field("audit_retention", &self.audit_retention)
            .finish()
    }
}

/// Hides the secrets of a URL: the password of `scheme://user:password@host/…` (the userinfo
/// runs to the last `@`, so a password holding `@` is hidden whole) and the values of query
/// parameters whose name says they are secret (`password`, `secret`, `token`, `key`, …).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) if scheme.is_some() => (Some(userinfo), rest),
        _ => (None, rest),
    };
    let mut out = String::with_capacity(url.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push_str(":***");
            }
            None => out.push_str(userinfo),
        }
        out.push('@');
    }
    let Some((path, query)) = rest.split_once('?') else {
        out.push_str(rest);
        return out;
    };
    let (query, fragment) = match query.split_once('#') {
        Some((query, fragment)) => (query, Some(fragment)),
        None => (query, None),
    };
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => {
                out.push_str(name);
                out.push_str("=***");
            }
            _ => out.push_str(pair),
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Whether a query parameter's name says its value is a secret.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
        "signature",
    ]
    .iter()
    .any(|word| name.contains(word))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

fn default_drain() -> Duration {
    Duration::from_secs(10)
}

fn default_store_url() -> String {
    "sqlite://data/streamgate.db".to_string()
}

fn default_log_filter() -> String {
    "info".to_string()
}

fn default_providers() -> Vec<ProviderConfig> {
    vec![ProviderConfig {
        id: "local".to_string(),
        kind: "local".to_string(),
        region: None,
        endpoint_url: None,
        settings: toml::Table::new(),
    }]
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            drain_timeout: default_drain(),
            default_deadline: default_deadline(),
            max_in_flight: default_max_in_flight(),
            max_in_flight_per_principal: default_max_in_flight_per_principal(),
            max_streams_per_principal: default_max_streams(),
            max_streams_per_connection: default_max_streams(),
            max_health_watches: default_max_health_watches(),
            http2_max_concurrent_streams: default_http2_max_concurrent_streams(),
            http2_keepalive_interval: default_keepalive_interval(),
            http2_keepalive_timeout: default_keepalive_timeout(),
            max_connection_age: default_max_connection_age(),
            max_connection_age_grace: default_max_connection_age_grace(),
            watch_initial_read_timeout: default_watch_initial_read_timeout(),
            worker_threads: 0,
            tls: None,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: default_store_url(),
            operation_lease: default_lease(),
            max_connections: default_max_connections(),
            acquire_timeout: default_acquire_timeout(),
            statement_timeout: default_statement_timeout(),
            operation_retention: default_operation_retention(),
            audit_retention: default_audit_retention(),
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: LogFormat::Text,
            log_filter: default_log_filter(),
            metrics_listen: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            providers: default_providers(),
            auth: AuthConfig::default(),
            authorization: Vec::new(),
            rate_limits: None,
            telemetry: TelemetryConfig::default(),
            environment: Environment::default(),
        }
    }
}

/// Parses a duration with a unit: `"250ms"`, `"60s"`, `"45m"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration with a unit such as \"250ms\" or \"60s\": {e}")
    })
}

/// Serde adapter for [`parse_duration`].
pub fn de_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

impl Config {
    /// Parses TOML text (no environment, no validation).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Reads `path` (or `STREAMGATE_CONFIG`, or the embedded default), applies the environment
    /// overrides in `env`, and validates the result.
    pub fn load(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| set(env, "STREAMGATE_CONFIG").map(Into::into));
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text).map_err(|e| match e {
                    ConfigError::Parse(why) => {
                        ConfigError::Parse(format!("{}: {why}", path.display()))
                    }
                    other => other,
                })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.environment = Environment(env.clone());
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        if let Some(listen) = set(env, "STREAMGATE_LISTEN") {
            self.server.listen = listen
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("STREAMGATE_LISTEN={listen:?}: {e}")))?;
        }
        if let Some(workers) = set(env, "STREAMGATE_WORKER_THREADS") {
            self.server.worker_threads = workers.parse().map_err(|e| {
                ConfigError::Invalid(format!("STREAMGATE_WORKER_THREADS={workers:?}: {e}"))
            })?;
        }
        if let Some(url) = set(env, "STREAMGATE_STORE_URL") {
            self.store.url = url.to_string();
        }
        if let Some(format) = set(env, "STREAMGATE_LOG_FORMAT") {
            self.telemetry.log_format = match format {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError::Invalid(format!(
                        "STREAMGATE_LOG_FORMAT={other:?}: use text or json"
                    )));
                }
            };
        }
        if let Some(filter) = set(env, "STREAMGATE_LOG") {
            self.telemetry.log_filter = filter.to_string();
        }
        if let Some(listen) = set(env, "STREAMGATE_METRICS_LISTEN") {
            self.telemetry.metrics_listen = Some(listen.parse().map_err(|e| {
                ConfigError::Invalid(format!("STREAMGATE_METRICS_LISTEN={listen:?}: {e}"))
            })?);
        }
        Ok(())
    }

    /// Checks what the types cannot: ids, duplicates, bounds, what needs what, and the
    /// loopback rule. What only building can check (each kind's own keys, `[auth]` and the
    /// rules, the TLS files, the `OTEL_*` variables) `server::Parts::build` checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.watch_initial_read_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "[server] watch_initial_read_timeout must be more than zero".into(),
            ));
        }
        if self.providers.is_empty() {
            return Err(ConfigError::Invalid(
                "no [[providers]] configured: streamgate would have nothing to serve".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for provider in &self.providers {
            check_provider_id(&provider.id).map_err(|why| {
                ConfigError::Invalid(format!("provider id {:?}: {why}", provider.id))
            })?;
            if !seen.insert(provider.id.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "provider id {:?} is configured twice",
                    provider.id
                )));
            }
        }
        if self.store.operation_lease < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "[store] operation_lease must be at least 1s".into(),
            ));
        }
        if self.store.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "[store] max_connections must be at least 1".into(),
            ));
        }
        for (key, value) in [
            ("acquire_timeout", self.store.acquire_timeout),
            ("statement_timeout", self.store.statement_timeout),
        ] {
            if value < Duration::from_millis(1) {
                return Err(ConfigError::Invalid(format!(
                    "[store] {key} must be at least 1ms"
                )));
            }
        }
        for (key, retention) in [
            ("operation_retention", self.store.operation_retention),
            ("audit_retention", self.store.audit_retention),
        ] {
            if retention < Duration::from_secs(1) {
                return Err(ConfigError::Invalid(format!(
                    "[store] {key} must be at least 1s"
                )));
            }
        }
        if self.server.worker_threads > MAX_WORKERS {
            return Err(ConfigError::Invalid(format!(
                "[server] worker_threads = {}: at most {MAX_WORKERS} (0: one per core)",
                self.server.worker_threads,
            )));
        }
        let client_ca = self
            .server
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca_file.is_some());
        if self.auth.mode == AuthMode::Mtls && !client_ca {
            return Err(ConfigError::Invalid(
                "auth mode mtls needs [server.tls] with client_ca_file".into(),
            ));
        }
        if let Some(tls) = &self.server.tls
            && tls.client_auth_optional
            && tls.client_ca_file.is_none()
        {
            return Err(ConfigError::Invalid(
                "[server.tls] client_auth_optional needs client_ca_file".into(),
            ));
        }
        if self.auth.mode == AuthMode::None && !self.server.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "refusing to listen on {} without authentication: listen on a loopback address \
                 or configure [auth]",
                self.server.listen
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_to_the_last_at_and_of_secret_query_values() {
        for (url, shown) in [
            (
                "postgres://app:p@ss@w0rd@db.internal:5432/sg",
                "postgres://app:***@db.internal:5432/sg",
            ),
            (
                "postgres://app@db/sg?sslmode=require&password=hunter2&sslkey=/k.pem",
                "postgres://app@db/sg?sslmode=require&password=***&sslkey=***",
            ),
            (
                "https://h/x?api_key=abc&Token=def&name=v#top",
                "https://h/x?api_key=***&Token=***&name=v#top",
            ),
            ("sqlite://data/streamgate.db", "sqlite://data/streamgate.db"),
            ("sqlite::memory:", "sqlite::memory:"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_is_one_local_provider_on_loopback() {
        let config = Config::load(None, &env(&[])).unwrap();
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.providers.len(), 1);
        assert_eq!(config.providers[0].kind, "local");
        assert_eq!(config.store.url, "sqlite://data/streamgate.db");
    }

    #[test]
    fn file_then_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            r#"
            [server]
            listen = "127.0.0.1:6000"
            drain_timeout = "250ms"
            [[providers]]
            id = "lab"
            kind = "local"
            create_delay = "5s"
            "#,
        )
        .unwrap();
        let config = Config::load(
            None,
            &env(&[
                ("STREAMGATE_CONFIG", path.to_str().unwrap()),
                ("STREAMGATE_LISTEN", "127.0.0.1:7000"),
                ("STREAMGATE_LOG_FORMAT", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 7000);
        assert_eq!(config.server.drain_timeout, Duration::from_millis(250));
        assert_eq!(config.telemetry.log_format, LogFormat::Json);
        assert_eq!(config.providers[0].id, "lab");
        assert!(config.providers[0].settings.contains_key("create_delay"));
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let config = Config::load(
            None,
            &env(&[
                ("STREAMGATE_CONFIG", ""),
                ("STREAMGATE_LISTEN", ""),
                ("STREAMGATE_STORE_URL", ""),
                ("STREAMGATE_LOG", ""),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen, default_listen());
        assert_eq!(config.store.url, default_store_url());
        assert_eq!(config.telemetry.log_filter, default_log_filter());
    }

    #[test]
    fn a_page_token_key_is_read_from_its_variable_and_never_shown() {
        let auth = Config::from_toml("[auth]\npage_token_key_env = \"SG_PAGES\"")
            .unwrap()
            .auth;
        let key = "k".repeat(MIN_PAGE_TOKEN_KEY_LEN);
        let environment = Environment(env(&[("SG_PAGES", &key)]));
        assert_eq!(
            auth.page_token_key(&environment).unwrap(),
            Some(key.as_bytes())
        );
        assert_eq!(auth.page_token_key(&Environment::default()).unwrap(), None);
        let short = Environment(env(&[("SG_PAGES", "hunter2")]));
        let error = auth.page_token_key(&short).unwrap_err().to_string();
        assert!(
            error.contains("SG_PAGES") && !error.contains("hunter2"),
            "{error}"
        );
        assert_eq!(
            AuthConfig::default().page_token_key_env,
            "STREAMGATE_PAGE_TOKEN_KEY"
        );
    }

    #[test]
    fn metrics_listen_is_off_unless_configured() {
        assert_eq!(
            Config::load(None, &env(&[]))
                .unwrap()
                .telemetry
                .metrics_listen,
            None
        );
        let config = Config::from_toml("[telemetry]\nmetrics_listen = \"127.0.0.1:9464\"").unwrap();
        assert_eq!(
            config.telemetry.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let overridden = Config::load(
            None,
            &env(&[("STREAMGATE_METRICS_LISTEN", "127.0.0.1:9000")]),
        )
        .unwrap();
        assert_eq!(overridden.telemetry.metrics_listen.unwrap().port(), 9000);
    }

    #[test]
    fn worker_threads_from_the_file_or_its_variable_and_bounded() {
        assert_eq!(
            Config::load(None, &env(&[])).unwrap().server.worker_threads,
            0
        );
        let config = Config::from_toml("[server]\nworker_threads = 4").unwrap();
        assert_eq!(config.server.worker_threads, 4);
        let overridden = Config::load(None, &env(&[("STREAMGATE_WORKER_THREADS", "1")])).unwrap();
        assert_eq!(overridden.server.worker_threads, 1);
        let error = Config::load(None, &env(&[("STREAMGATE_WORKER_THREADS", "two")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("STREAMGATE_WORKER_THREADS=\"two\""),
            "{error}"
        );
        let error = Config::from_toml("[server]\nworker_threads = 5000")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.contains("worker_threads = 5000"), "{error}");
    }

    #[test]
    fn refuses_public_listen_without_auth() {
        let error = Config::load(None, &env(&[("STREAMGATE_LISTEN", "0.0.0.0:50051")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("without authentication"), "{error}");
    }

    #[test]
    fn refuses_unknown_keys_and_bad_ids() {
        assert!(Config::from_toml("[server]\nlisten_on = \"x\"").is_err());
        let twice = Config::from_toml(
            "[[providers]]\nid = \"a\"\nkind = \"local\"\n[[providers]]\nid = \"a\"\nkind = \"local\"",
        )
        .unwrap();
        assert!(twice.validate().is_err());
        let bad = Config::from_toml("[[providers]]\nid = \"Bad_Id\"\nkind = \"local\"").unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn debug_hides_store_password_and_setting_values() {
        let config = Config::from_toml(
            "[store]\nurl = \"postgres://sg:hunter2@db/sg\"\n[[providers]]\nid = \"v\"\nkind = \"local\"\naccess_key_secret = \"s3cr3t\"",
        )
        .unwrap();
        let mut config = config;
        config.environment = Environment(HashMap::from([(
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET".to_string(),
            "envs3cr3t".to_string(),
        )]));
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("envs3cr3t"), "{shown}");
        assert!(shown.contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET"), "{shown}");
    }

    #[test]
    fn store_pool_settings_have_defaults_and_bounds() {
        let defaults = Config::from_toml("").unwrap().store;
        assert_eq!(defaults.max_connections, 10);
        assert_eq!(defaults.acquire_timeout, Duration::from_secs(2));
        assert_eq!(defaults.statement_timeout, Duration::from_secs(10));
        let set = Config::from_toml(
            "[store]\nmax_connections = 4\nacquire_timeout = \"500ms\"\nstatement_timeout = \"1m\"",
        )
        .unwrap();
        set.validate().unwrap();
        assert_eq!(set.store.max_connections, 4);
        assert_eq!(set.store.acquire_timeout, Duration::from_millis(500));
        assert_eq!(set.store.statement_timeout, Duration::from_secs(60));
        for (key, value) in [
            ("max_connections", "0"),
            ("acquire_timeout", "\"0s\""),
            ("statement_timeout", "\"0s\""),
        ] {
            let config = Config::from_toml(&format!("[store]\n{key} = {value}")).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }
}
