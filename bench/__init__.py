"""The benchmarks: each prints a table and writes JSON + a PNG plot (``python -m bench
<name>``; ``fetalflex bench <name>`` hands its arguments here).

Ratios are measured side by side in one process, one run; nothing here asserts a speed.
This package sits above the library, the service and the exporters: it may import all of
them, and nothing imports it (``tests/test_layering.py``).
"""
