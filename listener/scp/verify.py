"""Verification SCU: the ``dicom-listener echo`` command and the container health check."""

from __future__ import annotations

import ssl

from pynetdicom import AE

from listener.dicom_codes import VERIFICATION


def verify(
    host: str,
    port: int,
    *,
    called_ae: str,
    calling_ae: str,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> int:
    """Send one C-ECHO; return its status (0x0000 = success) or raise ConnectionError."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    tls_args = (tls, host) if tls is not None else None
    association = ae.associate(host, port, ae_title=called_ae, tls_args=tls_args)
    if not association.is_established:
        raise ConnectionError(f"no association with {called_ae}@{host}:{port}")
    try:
        status = association.send_c_echo()
    finally:
        association.release()
    if not status or "Status" not in status:
        raise ConnectionError("no C-ECHO response")
    return int(status.Status)
