"""CommandService and the dispatcher."""
