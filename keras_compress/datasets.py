"""Offline data loaders."""
