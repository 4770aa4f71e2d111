"""`lifebox loadgen`: simulated devices publishing realistic telemetry over MQTT."""
