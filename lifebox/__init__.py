"""Generated from protos/lifebox/v1: do not edit."""
