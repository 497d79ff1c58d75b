"""Renderers: static HTML (survives a saved notebook), live widgets, plain text."""
