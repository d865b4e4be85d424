//! `tenancy.v1.TenantConfigService`: per-tenant configuration.
