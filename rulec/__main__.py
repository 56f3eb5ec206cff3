"""`python -m rulec`."""

from rulec.cli import main

raise SystemExit(main())
