"""Results: published numbers, experiment presets, grouping runs, reports."""
