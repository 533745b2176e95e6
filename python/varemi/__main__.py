"""``python -m varemi``."""

from varemi.cli import main

raise SystemExit(main())
