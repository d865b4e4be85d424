//! GetProvisioningStats against the events of scripted runs.
