"""Commands beyond the API: parameter schemas, the one way a command is created (for the API
and for alarm reactions), and the dispatcher that publishes the outbox."""
