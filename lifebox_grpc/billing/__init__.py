"""Billing's own machinery beside the API: metering, the Fawry client and signatures, the
payment webhook, and the enforcement passes `lifebox maintain` runs. No protobuf here."""
