"""Test helpers: factories and waiting without sleeping blindly."""
