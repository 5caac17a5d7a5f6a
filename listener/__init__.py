"""dicom-listener: receive DICOM studies over C-STORE, publish one FHIR ImagingStudy per study."""

__version__ = "0.1.0"
