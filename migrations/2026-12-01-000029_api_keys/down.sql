UPDATE plans SET
    steps = (
        SELECT jsonb_agg(step ORDER BY position)
        FROM jsonb_array_elements(plans.steps) WITH ORDINALITY AS s (step, position)
        WHERE step ->> 'name' <> 'issue_api_key'
    ),
    version = version + 1,
    update_time = now()
WHERE built_in AND steps @> '[{"name": "issue_api_key"}]';
DROP TABLE api_keys;
