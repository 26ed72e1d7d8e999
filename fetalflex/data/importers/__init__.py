"""Importers: public and user data sets -> our manifest (``fetalflex import ...``).

* ``hc18``: the HC18 challenge layout (head scans + head outline + pixel size / HC CSV).
* ``fpdb``: the FETAL_PLANES_DB layout (``Images/`` + semicolon CSV of planes and patients).
* ``folder``: a user's own images (+ optional label maps) and a CSV of planes.

Each writes ``images/``, ``labels/``, ``manifest.jsonl`` and ``import_report.json`` under
``--out``; scans become the model's square size by ``squaring`` (letterbox, aspect kept);
subjects are split into train / validation by ``split``.
"""
