"""DICOM UIDs and status codes the listener names in more than one place, each defined once.

Pure constants (PS3.6 Annex A for UIDs, PS3.7 Annex C and PS3.4 for statuses); modules import
them from here rather than repeating the strings.
"""

from __future__ import annotations

# Transfer syntaxes.
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"  # retired, still sent by old modalities
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
# Every syntax whose data set is deflated (the JPIP referenced-deflate ones too).
DEFLATED_SYNTAXES = frozenset(
    {DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"}
)
# What we offer first and request for DIMSE-N: explicit VR first, then implicit.
UNCOMPRESSED_SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)

# SOP classes.
VERIFICATION = "1.2.840.10008.1.1"
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
STORAGE_COMMITMENT_PUSH_INSTANCE = "1.2.840.10008.1.20.1.1"  # its well-known SOP instance

# Statuses.
OUT_OF_RESOURCES = 0xA700  # C-STORE "Refused: Out of Resources"
PROCESSING_FAILURE = 0x0110
