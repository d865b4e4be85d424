//! PlanService: versioned plans, their per-step settings, and the built-in
//! plans.
