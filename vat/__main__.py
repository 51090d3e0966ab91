"""`python -m vat` is the same as the `vat` command."""

from vat.cli import main

raise SystemExit(main())
