"""Helpers shared by tests: fake transports, seed data, subprocess victims."""
