"""`lifebox db`: the database's operations (status, backup, restore, reset) and the friendly
failures every command reports instead of a traceback."""
