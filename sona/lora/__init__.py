"""Placeholder until this subpackage lands."""
