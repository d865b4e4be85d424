//! The statistics queries.
