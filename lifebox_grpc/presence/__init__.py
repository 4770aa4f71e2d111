"""Device presence (issue 13): the status-topic contract, the sweeper and the retained read."""
