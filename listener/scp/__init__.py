"""The DICOM boundary; the only package that imports pynetdicom.

``server`` runs the Storage SCP, ``guard`` vets connections (TLS, deadlines, address rules),
``association_request`` reads and vets the A-ASSOCIATE-RQ for it, ``admission`` holds the
per-address caps and the hand-off to pynetdicom, ``receive`` assembles each message
(``incoming``) and streams C-STORE data sets to ``spool`` (into files ``spool_pool`` made ahead,
after the File Meta of ``file_meta``), ``watchdog`` cuts messages that arrive too slowly,
``response`` encodes plain C-STORE responses, ``wakeup`` stops pynetdicom's per-association
threads from polling, ``contexts`` says what is accepted and which statuses are
answered, ``verify`` is the C-ECHO SCU.
"""

from listener.scp.contexts import STATUS_FOR_OUTCOME, storage_sop_classes, transfer_syntaxes
from listener.scp.guard import client_tls_context
from listener.scp.server import DicomServer, IncomingInstance, InstanceSink
from listener.scp.verify import verify

__all__ = [
    "STATUS_FOR_OUTCOME",
    "DicomServer",
    "IncomingInstance",
    "InstanceSink",
    "client_tls_context",
    "storage_sop_classes",
    "transfer_syntaxes",
    "verify",
]
