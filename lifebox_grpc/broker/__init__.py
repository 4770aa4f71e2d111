"""The MQTT broker's view of device identity: hashes, its password and ACL files (issue 13)."""
