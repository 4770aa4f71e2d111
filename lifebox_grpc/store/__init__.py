"""All SQL lives here: one module per aggregate, plain async functions over asyncpg."""
