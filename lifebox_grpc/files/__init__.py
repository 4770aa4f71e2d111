"""Where uploaded files' bytes live: one small interface (:mod:`.storage`), a PostgreSQL
store (the default) and a local-directory store; :func:`.storage.store_named` picks one."""
