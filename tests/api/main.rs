//! Integration tests of the gRPC API against a real server and PostgreSQL.

#[path = "../common/mod.rs"]
mod common;

mod archives;
mod attention;
mod auth;
mod certificates;
mod chaining;
mod channels;
mod config;
mod connections;
mod contracts;
mod create;
mod crud;
mod dns;
mod docs;
mod drift;
mod embedded;
mod examples;
mod fencing;
mod fleet;
mod ha;
mod lifecycle;
mod meta;
mod metrics;
mod moves;
mod oidc;
mod outage;
mod pipeline;
mod placement;
mod plans;
mod quotas;
mod replicas;
mod secrets;
mod soroban;
mod stats;
mod stats_rollup;
mod stream;
mod tenant_scope;
mod tenantctl;
mod tls;
mod traces;
mod usage;
mod waits;
mod webhook_steps;
mod webhooks;
