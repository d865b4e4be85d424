//! Provisioning statistics from the event log.
