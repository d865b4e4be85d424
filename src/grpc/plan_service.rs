//! `tenancy.v1.PlanService`: versioned plans.
