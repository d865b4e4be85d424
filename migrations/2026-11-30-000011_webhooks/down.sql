DROP TRIGGER events_webhook_fan_out ON events;
DROP FUNCTION webhook_fan_out();
DROP FUNCTION webhook_event_type(TEXT, TEXT, TEXT);
DROP TABLE webhook_deliveries;
DROP TABLE webhook_endpoints;
