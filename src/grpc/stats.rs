//! GetProvisioningStats: the conversion of its request and response.
