//! tenantd: a gRPC control plane that creates, provisions, watches and
//! deprovisions the tenants of a multi-tenant SaaS.
//!
//! # Layout
//!
//! | module      | what lives there |
//! |-------------|------------------|
//! | [`auth`]    | bearer JWTs: verification, scopes, minting for operators |
//! | [`config`]  | every flag and environment variable, documented |
//! | [`server`]  | wiring, startup, graceful shutdown |
//! | [`grpc`]    | the only module that knows tonic: services, conversions, status codes |
//! | [`ops`]     | use cases; each owns its transaction (state + event + outbox row) |
//! | [`domain`]  | pure types, state machine, validation |
//! | [`db`]      | pool, migrations, row models, queries on `&mut AsyncPgConnection`, the embedded cluster |
//! | [`outbox`]  | the outbox: wake-ups, LISTEN, claim/lease with its fencing token, the dispatcher, pipeline transitions, test hooks |
//! | [`secrets`] | secrets at rest: one key-encryption key, sealed values bound to their row |
//! | [`outbound`] | the one HTTP client for URLs that arrive through the API: address rules, no redirects, timeouts, body cap |
//! | [`stream`]  | the event hub and watchers behind StreamProvisioningStatus |
//! | [`steps`]   | provisioning steps behind one trait, and their registry |
//! | [`proto`]   | generated code and the descriptor set |
//! | [`demo`]    | `serve --demo`: provisions one tenant and logs its steps |
//! | [`scheduler`] | cron jobs: reaper, purge, prune, each under an advisory lock |
//! | [`bench`]   | `tenantd bench`: figures on scratch databases, and the SMTP listener it sends to |
//! | [`soroban`] | contract deployment: addresses, signing, channel accounts, the Soroban RPC client, the deployment flow, the local Soroban network |
//! | [`dns`]     | tenants' DNS names: RFC 2136 updates signed with TSIG |
//! | [`acme`]    | tenants' TLS certificates: the ACME account, orders, revocation |
//! | [`api_keys`] | tenants' API keys: settings, minting, VerifyApiKey's memory |
//! | [`oidc`]    | the identity provider: discovery, RFC 7591/7592 client registration |
//! | [`webhooks`] | the webhook sender: claims due deliveries, signs them (Standard Webhooks), records outcomes |
//! | [`telemetry`] | logs, OTLP trace export, Prometheus metrics |
//!
//! The request path is `grpc` -> `ops` -> `db`; `domain` is shared by all.
//! A service has one file in each layer:
//!
//! | service | grpc | ops | db | domain |
//! |---------|------|-----|----|--------|
//! | TenantService | `tenant_service` | `tenants`, `lifecycle`, `teardown`, `watch`, `stats` | `tenants`, `events`, `stats` | `tenant`, `validate` |
//! | PlanService | `plan_service` | `plans` | `plans` | `plan` |
//! | TenantConfigService | `config_service` | `config` | `config` | `settings` |
//! | WebhookService | `webhook_service` | `webhooks` | `webhooks` | `webhook` |
//! | UsageService | `usage_service` | `usage` | `usage` | `usage` |
//! | PlacementService | `placement_service` | `placement` | `servers` | - |
#![forbid(unsafe_code)]

pub mod acme;
pub mod api_keys;
pub mod archive;
pub mod auth;
pub mod bench;
pub mod config;
pub mod db;
pub mod demo;
pub mod dns;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod oidc;
pub mod ops;
pub mod outbound;
pub mod outbox;
pub mod proto;
pub mod scheduler;
pub mod secrets;
pub mod server;
pub mod soroban;
pub mod steps;
pub mod stream;
pub mod telemetry;
pub mod webhooks;
