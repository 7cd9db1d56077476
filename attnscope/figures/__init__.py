"""Matplotlib figure builders (PNG, PDF, SVG) in one consistent style."""
