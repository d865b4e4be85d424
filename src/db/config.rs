//! Queries on `tenant_config`.
