UPDATE plans SET
    steps = (
        SELECT jsonb_agg(step ORDER BY position)
        FROM jsonb_array_elements(plans.steps) WITH ORDINALITY AS s (step, position)
        WHERE step ->> 'name' <> 'deploy_contract'
    ),
    version = version + 1,
    update_time = now()
WHERE built_in AND steps @> '[{"name": "deploy_contract"}]';
DROP TABLE soroban_transactions;
DROP TABLE contract_deployments;
