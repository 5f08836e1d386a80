//! streamgate: one provider-neutral gRPC API for the lifecycle of video streams, whatever
//! cloud holds them.
//!
//! # Layout
//!
//! - [`config`] — typed configuration from TOML, environment and flags: plain data and the
//!   checks of its values.
//! - [`server`] — builds the configuration's runtime objects once ([`server::Parts`]); mounts
//!   the services, health and reflection behind [`middleware::stack`]; graceful shutdown.
//! - [`error`] — THE error taxonomy, and the only place that builds a `tonic::Status`.
//! - [`api`] — gRPC handlers: validate, route to a provider, convert.
//! - [`identity`] — who the caller is: principal and grants, shared by middleware and handlers.
//! - [`methods`] — the table of served gRPC methods, and which of them are mutating.
//! - [`deadline`] — the caller's deadline, visible to provider retries.
//! - [`domain`] — the provider-neutral model: names, streams, operations, capabilities,
//!   endpoints, paging.
//! - [`providers`] — the provider trait, the registry, and one folder per kind.
//! - [`operations`] — the durable runner of long-running operations.
//! - [`audit`] — the audit trail of mutating calls (table, log line, AuditService).
//! - [`store`] — the operation store and the audit table on SQLite or PostgreSQL; the retention
//!   sweep that keeps them bounded; the notices between replicas (LISTEN/NOTIFY).
//! - [`watch`] — fan-out of stream changes to WatchStream subscribers; shared reads, and the
//!   poller of each watched stream (one per fleet on PostgreSQL).
//! - [`middleware`] — the tower layers in front of every call.
//! - [`telemetry`] — logs, OpenTelemetry traces and metrics, the Prometheus scrape endpoint.
//! - [`runtime`] — the tokio runtime the binary runs on: one worker per core, and the
//!   current-thread scheduler when that is one.
//! - [`probe`] — the client side of `streamgate probe`, the container image's health check.
//! - [`pb`] — the generated protobuf types, clients and servers of `streamgate.v1`, and their
//!   codec.

pub mod api;
pub mod audit;
pub mod config;
pub mod deadline;
pub mod domain;
pub mod error;
pub mod identity;
pub mod methods;
pub mod middleware;
pub mod operations;
pub mod pb;
pub mod probe;
pub mod providers;
pub mod runtime;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod watch;
