// Diesel's view of migrations/: keep in step with the SQL there. The
// integration tests read and write every column through these definitions.

diesel::table! {
    plans (name) {
        name -> Text,
        version -> Int4,
        description -> Text,
        steps -> Jsonb,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        migration_set -> Text,
        initial_data -> Jsonb,
        limits -> Jsonb,
        built_in -> Bool,
        delete_time -> Nullable<Timestamptz>,
        meter_limits -> Jsonb,
        on_limit -> Text,
    }
}

diesel::table! {
    plan_versions (name, version) {
        name -> Text,
        version -> Int4,
        description -> Text,
        steps -> Jsonb,
        migration_set -> Text,
        initial_data -> Jsonb,
        limits -> Jsonb,
        create_time -> Timestamptz,
        meter_limits -> Jsonb,
        on_limit -> Text,
    }
}

diesel::table! {
    tenants (id) {
        id -> Uuid,
        slug -> Text,
        display_name -> Text,
        admin_email -> Text,
        plan -> Text,
        plan_version -> Int4,
        labels -> Jsonb,
        state -> Text,
        state_reason -> Text,
        cancel_requested -> Bool,
        outputs -> Jsonb,
        leftover_resources -> Array<Text>,
        request_id -> Nullable<Text>,
        request_digest -> Nullable<Text>,
        revision -> Int8,
        create_time -> Timestamptz,
        update_time -> Timestamptz,
        delete_time -> Nullable<Timestamptz>,
        purge_time -> Nullable<Timestamptz>,
        deprovision_mode -> Nullable<Text>,
        grace_period_secs -> Nullable<Int8>,
        legal_hold -> Bool,
        legal_hold_reason -> Text,
        database_server -> Text,
        placement -> Text,
        contract_owner -> Text,
    }
}

diesel::table! {
    tenant_steps (tenant_id, position) {
        tenant_id -> Uuid,
        position -> Int4,
        name -> Text,
        critical -> Bool,
        max_attempts -> Int4,
        status -> Text,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        output -> Jsonb,
        start_time -> Nullable<Timestamptz>,
        finish_time -> Nullable<Timestamptz>,
        phase -> Text,
        retry_base_ms -> Nullable<Int4>,
        retry_cap_ms -> Nullable<Int4>,
        timeout_ms -> Nullable<Int4>,
        webhook_endpoint -> Nullable<Text>,
        webhook_compensate -> Bool,
    }
}

diesel::table! {
    events (id) {
        id -> Int8,
        tenant_id -> Uuid,
        kind -> Text,
        step -> Nullable<Text>,
        attempt -> Nullable<Int4>,
        state -> Text,
        message -> Text,
        actor -> Text,
        create_time -> Timestamptz,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        tenant_id -> Uuid,
        operation -> Text,
        step -> Text,
        attempt -> Int4,
        available_at -> Timestamptz,
        lease_owner -> Nullable<Text>,
        locked_until -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        create_time -> Timestamptz,
        lease_token -> Nullable<Int8>,
        waiting_since -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(tenants -> plans (plan));
diesel::joinable!(plan_versions -> plans (name));
diesel::joinable!(tenant_steps -> tenants (tenant_id));
diesel::joinable!(events -> tenants (tenant_id));
diesel::joinable!(outbox -> tenants (tenant_id));

diesel::allow_tables_to_appear_in_same_query!(
    plans,
    plan_versions,
    tenants,
    tenant_steps,
    events,
    outbox,
);
