"""``python -m bench <name>``: the benchmarks (see ``bench/cli.py``)."""

from bench.cli import main

raise SystemExit(main())
