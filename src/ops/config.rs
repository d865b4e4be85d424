//! Per-tenant configuration: typed settings seeded from the plan.
