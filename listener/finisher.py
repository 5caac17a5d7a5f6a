"""Turning a finished study into its next published version (an outbox message)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from listener import fhir
from listener.config import Settings
from listener.journal_api import JournalStore, OutboxMessage, StudyRow
from listener.logs import get_logger
from listener.model import StudyState

log = get_logger("listener.finisher")


class ClaimLost(Exception):
    """The claimed study changed (or was finished elsewhere) before its version was written."""


@dataclass(frozen=True, slots=True)
class Completion:
    """Why and how a study version is published."""

    reason: str = "quiet-period"
    status: str = "available"
    missing: frozenset[str] = frozenset()


def fhir_options(settings: Settings) -> fhir.FhirOptions:
    """The mapping options the ``[fhir]`` settings describe.

    With DICOMweb on and no other endpoint configured, the Endpoint is our own service.
    """
    options = fhir.FhirOptions(**dataclasses.asdict(settings.fhir))
    if settings.dicomweb.enabled and not (options.endpoint_address or options.endpoint_reference):
        options = dataclasses.replace(
            options, endpoint_address=settings.dicomweb.effective_base_url()
        )
    return options


def message_id(study_uid: str, version: int) -> str:
    """The deterministic message id of one study version."""
    return f"{study_uid}/v{version}"


class StudyFinisher:
    """Maps a study to FHIR and queues it, unless its content equals the last published version."""

    def __init__(self, journal: JournalStore, *, options: fhir.FhirOptions) -> None:
        self._journal = journal
        self._options = options

    def finish(
        self,
        state: StudyState,
        now: float,
        *,
        completion: Completion | None = None,
        fence: StudyRow | None = None,
        consumed_steps: Sequence[str] = (),
    ) -> OutboxMessage | None:
        """Publish ``state`` as the study's next version; None when its content did not change.

        The digest covers the resource without ``meta``, so re-finishing identical content (a
        re-opened study that gained nothing new) does not create a version. With ``fence`` (the
        row a claim returned) it raises :class:`ClaimLost` when the study changed since.
        """
        row = fence if fence is not None else self._journal.study(state.study_uid)
        completion = completion or Completion()
        built, digest = self._message(state, (row.version if row else 0) + 1, now, completion)
        message = None if row is not None and row.digest == digest else built
        finished = self._journal.finish_study(
            state.study_uid,
            digest=digest,
            message=message,
            finished_at=now,
            fence=fence,
            consumed_steps=consumed_steps,
        )
        if not finished:
            raise ClaimLost(state.study_uid)
        return message

    def republish(self, state: StudyState, now: float) -> OutboxMessage | None:
        """Queue a published study again as a new version; None if it is not published now."""
        row = self._journal.study(state.study_uid)
        if row is None or row.state != "published":
            return None
        message, _digest = self._message(state, row.version + 1, now, Completion("republished"))
        return message if self._journal.queue_republication(message) else None

    def _message(
        self, state: StudyState, version: int, now: float, completion: Completion
    ) -> tuple[OutboxMessage, str]:
        """The outbox message for ``version`` of the study, and its version-free content digest."""
        mapped = fhir.imaging_study(
            state, version=version, options=self._options, status=completion.status
        )
        for warning in mapped.warnings:
            log.warning("study mapping", study_uid=state.study_uid, problem=warning)
        resource = mapped.resource
        digest = _content_digest(state, resource)
        message = OutboxMessage(
            id=0,
            study_uid=state.study_uid,
            version=version,
            message_id=message_id(state.study_uid, version),
            headers={
                "study_instance_uid": state.study_uid,
                "resource_version": version,
                "fhir_version": fhir.FHIR_RELEASES[self._options.version],
                "series_count": len(state.series),
                "instance_count": state.number_of_instances,
                "study_status": completion.status,
                "completion_reason": completion.reason,
                **(
                    {"missing_instance_uids": sorted(completion.missing)}
                    if completion.missing
                    else {}
                ),
            },
            body=fhir.encode(resource),
            created_at=now,
        )
        return message, digest


def _content_digest(state: StudyState, resource: dict[str, Any]) -> str:
    """What a new version must differ in: the resource without ``meta``, and the instances' bytes.

    A re-sent instance with other pixel data but the same header changes no element of the
    resource, yet consumers that processed the instance must hear of it: its content digest
    is part of this one. Without instance digests (records from before journal schema 4) it is
    the resource's digest alone, as before, so an upgrade does not publish unchanged studies.
    """
    unversioned = {key: value for key, value in resource.items() if key != "meta"}
    digest = hashlib.sha256(fhir.encode(unversioned))
    contents = sorted((r.sop_instance_uid, r.digest) for r in state.instances if r.digest)
    for uid, content in contents:
        digest.update(f"\n{uid} {content}".encode())
    return digest.hexdigest()
