"""A bare pynetdicom storage SCP: accepts every storage SOP class, answers 0x0000, keeps nothing.

``python -m benchmarks.bare_scp PORT`` serves on 127.0.0.1:PORT until terminated. It accepts any
called AE title and answers C-ECHO (for readiness checks). It is the floor for what a pynetdicom
receiver costs before anything is written to disk.
"""

from __future__ import annotations

import sys

from pynetdicom import AE, AllStoragePresentationContexts, evt

VERIFICATION = "1.2.840.10008.1.1"
SUCCESS = 0x0000


def handle_store(_event: evt.Event) -> int:
    """Answer success without decoding or storing the dataset."""
    return SUCCESS


def make_ae() -> AE:
    """An AE supporting every storage SOP class (default transfer syntaxes) and Verification."""
    ae = AE(ae_title="BARE-SCP")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(VERIFICATION)
    ae.maximum_associations = 16
    return ae


def main(argv: list[str]) -> int:
    """Serve on the port given as the only argument until the process is terminated."""
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m benchmarks.bare_scp PORT", file=sys.stderr)
        return 2
    handlers: list[evt.EventHandlerType] = [(evt.EVT_C_STORE, handle_store)]
    make_ae().start_server(("127.0.0.1", int(argv[0])), block=True, evt_handlers=handlers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
