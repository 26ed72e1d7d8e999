"""``python -m fetalflex.cli``: the ``fetalflex`` command (``torchrun -m fetalflex.cli``)."""

from fetalflex.cli import main

raise SystemExit(main())
