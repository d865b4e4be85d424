DROP FUNCTION usage_bucket(TIMESTAMPTZ);
DROP TABLE usage_subjects;
DROP TABLE usage_rollups;
DROP TABLE usage_events;
DROP TABLE meters;
