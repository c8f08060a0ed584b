"""``python -m sdconet {train,evaluate,summary}``; see :mod:`sdconet.cli`."""
from sdconet.cli import main

raise SystemExit(main())
