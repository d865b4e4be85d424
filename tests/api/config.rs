//! Per-tenant configuration: typed settings seeded from the plan, validated
//! against its limits, every change an event.
