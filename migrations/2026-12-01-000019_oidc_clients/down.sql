DELETE FROM plan_versions v USING plans p
WHERE v.name = p.name AND p.name = 'sso' AND p.built_in
  AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.plan = 'sso');
DELETE FROM plans WHERE name = 'sso' AND built_in AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.plan = 'sso');
DROP TABLE oidc_clients;
