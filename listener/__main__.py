"""``python -m listener`` runs the same command line as ``dicom-listener``."""

from listener.cli import main

raise SystemExit(main())
