"""Read-only DICOMweb (PS3.18 QIDO-RS and WADO-RS) over the instances the listener holds."""

from listener.dicomweb.server import DicomWebServer

__all__ = ["DicomWebServer"]
