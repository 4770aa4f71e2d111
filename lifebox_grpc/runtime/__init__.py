"""Embedded PostgreSQL and mosquitto for `lifebox dev` and the test suite (one implementation)."""
