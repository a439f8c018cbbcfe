"""The cellguard service: config, supervision, halting, sinks, MQTT, CLI."""
