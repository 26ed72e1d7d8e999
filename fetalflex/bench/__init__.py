"""``fetalflex bench``: benchmarks that print a table and write JSON + a PNG plot.

Ratios are measured side by side in one process, one run; nothing here asserts a speed.
"""
