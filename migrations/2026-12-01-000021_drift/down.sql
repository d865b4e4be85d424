DROP TABLE tenant_drift;
