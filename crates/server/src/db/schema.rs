//! Diesel's view of the tables, shared by both backends (portable column types only).
#![expect(
    missing_docs,
    reason = "generated-style table definitions; the migrations document them"
)]

diesel::table! {
    organisations (id) {
        id -> Text,
        name -> Text,
        name_key -> Text,
        is_active -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    units (id) {
        id -> Text,
        organisation_id -> Text,
        name -> Text,
        name_key -> Text,
        code -> Nullable<Text>,
        code_key -> Nullable<Text>,
        is_active -> Bool,
        created_at -> BigInt,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        organisation_id -> Text,
        username -> Text,
        username_key -> Text,
        password_hash -> Nullable<Text>,
        is_active -> Bool,
        created_at -> BigInt,
        role -> Text,
    }
}

diesel::table! {
    user_units (user_id, unit_id) {
        user_id -> Text,
        unit_id -> Text,
        is_default -> Bool,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        organisation_id -> Text,
        user_id -> Text,
        digest -> Text,
        prefix -> Text,
        created_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        last_used_at -> Nullable<BigInt>,
        name -> Nullable<Text>,
        expires_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        organisation_id -> Text,
        user_id -> Text,
        unit_id -> Text,
        api_key_id -> Nullable<Text>,
        method -> Text,
        username -> Text,
        organisation_name -> Text,
        unit_name -> Text,
        created_at -> BigInt,
        generation -> BigInt,
        rotated_at -> BigInt,
        expires_at -> BigInt,
        max_end_at -> BigInt,
        ended_at -> Nullable<BigInt>,
        end_reason -> Nullable<Text>,
        refreshed_at -> Nullable<BigInt>,
        client -> Nullable<Text>,
        unit_code -> Nullable<Text>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> Text,
        organisation_id -> Nullable<Text>,
        at -> BigInt,
        actor -> Text,
        action -> Text,
        target -> Text,
        client -> Nullable<Text>,
    }
}

diesel::table! {
    login_failures (organisation_key, username_key) {
        organisation_key -> Text,
        username_key -> Text,
        failures -> BigInt,
        locked_until -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    login_checks (organisation_key, username_key, id) {
        organisation_key -> Text,
        username_key -> Text,
        id -> Text,
        taken_at -> BigInt,
    }
}

diesel::table! {
    rate_limit_hits (client, slot) {
        client -> Text,
        slot -> BigInt,
        hits -> BigInt,
    }
}

diesel::joinable!(units -> organisations (organisation_id));
diesel::joinable!(users -> organisations (organisation_id));
diesel::joinable!(user_units -> units (unit_id));
diesel::joinable!(user_units -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(
    organisations,
    units,
    users,
    user_units,
    api_keys,
    sessions,
    audit_events
);
