"""LifeBox: a multi-tenant IoT platform backend."""

__version__ = "0.1.0"
