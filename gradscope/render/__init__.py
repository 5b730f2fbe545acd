"""Renderers of a `GradientHistory`: terminal tables and matplotlib plots."""
