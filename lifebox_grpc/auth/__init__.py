"""Passwords, tokens, principals, permissions and the authentication interceptor."""
