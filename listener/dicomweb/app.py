"""The read-only DICOMweb service (PS3.18): QIDO-RS searches and WADO-RS retrieve and metadata.

Searches and metadata come from the journal's records; retrieval streams the stored files as
received (no transcoding), one part at a time, so a study of any size is served in constant memory.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from listener.dicomweb import qido
from listener.dicomweb.attributes import LEVELS, Level, dataset
from listener.header import is_valid_uid
from listener.journal_api import JournalStore, RecordQuery
from listener.logs import get_logger
from listener.model import InstanceRecord

log = get_logger("listener.dicomweb")

PREFIX = "/dicomweb"
DICOM_JSON = "application/dicom+json"
_CHUNK = 256 * 1024
_UID_PARAMS = ("study", "series", "instance")
_PATH_KEYS = {"study": "study_uid", "series": "series_uid", "instance": "sop_instance_uid"}


class HttpError(Exception):
    """A request we answer with an error status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class DicomWebApp:
    """The ASGI application over one journal and one instance file tree."""

    def __init__(
        self,
        journal: JournalStore,
        files_root: Path,
        *,
        base_url: str,
        tokens: frozenset[str],
        count: Callable[[int], None],
    ) -> None:
        self._journal = journal
        self._files_root = files_root
        self._base_url = base_url
        self._tokens = tokens
        self._count = count
        self.asgi = Starlette(
            routes=self._routes(),
            middleware=[Middleware(_Guard, owner=self)],
            exception_handlers={HttpError: _http_error, qido.SearchError: _search_error},
        )

    def _routes(self) -> list[Route]:
        study = PREFIX + "/studies/{study}"
        series = study + "/series/{series}"
        instance = series + "/instances/{instance}"
        routes = [
            (PREFIX + "/studies", self._search("study")),
            (PREFIX + "/series", self._search("series")),
            (PREFIX + "/instances", self._search("instance")),
            (study + "/series", self._search("series")),
            (study + "/instances", self._search("instance")),
            (series + "/instances", self._search("instance")),
        ]
        for path, level in ((study, "study"), (series, "series"), (instance, "instance")):
            routes += [(path, self._retrieve(level)), (path + "/metadata", self._metadata(level))]
        known = [Route(path, endpoint, methods=["GET"]) for path, endpoint in routes]
        return [*known, Route(PREFIX + "/{rest:path}", _unknown_path, methods=["GET"])]

    # -- transactions ---------------------------------------------------------------------------

    def _search(self, level: Level) -> Callable[[Request], Response]:
        def search(request: Request) -> Response:
            path_keys = _path_keys(request)
            parsed = qido.parse(level, request.query_params.multi_items())
            query = RecordQuery(**qido.narrowing(parsed, path_keys))
            found = qido.run(
                parsed, self._journal.find_records(query), retrieve_base=self._base_url
            )
            headers = {}
            if parsed.ignored:
                headers["Warning"] = (
                    f'299 dicom-listener "not matched on: {", ".join(parsed.ignored)}"'
                )
            if not found:
                return Response(status_code=204, headers=headers)
            return _json(found, headers)

        return search

    def _metadata(self, level: Level) -> Callable[[Request], Response]:
        def metadata(request: Request) -> Response:
            records = self._records(request)
            return _json([dataset(record, LEVELS) for record in records])

        return metadata

    def _retrieve(self, level: Level) -> Callable[[Request], Response]:
        def retrieve(request: Request) -> Response:
            records = self._records(request)
            _check_acceptable(request.headers.get("accept", "*/*"), records)
            paths = [self._file(record) for record in records]
            boundary = uuid.uuid4().hex
            media_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
            return StreamingResponse(_multipart(records, paths, boundary), media_type=media_type)

        return retrieve

    def _records(self, request: Request) -> list[InstanceRecord]:
        """The records a WADO-RS path names; 404 when there are none."""
        records = self._journal.find_records(RecordQuery(**_path_keys(request)))
        if not records:
            raise HttpError(404, "no such study, series or instance")
        return records

    def _file(self, record: InstanceRecord) -> Path:
        """The stored file of a record; 404 when it is gone (retention), before any byte is sent."""
        path = self._files_root / record.file if record.file else None
        if path is None or not path.is_file():
            raise HttpError(404, "the instance files are no longer stored")
        return path

    # -- the guard: tokens, errors, access log, metrics -----------------------------------------

    def authorized(self, request: Request) -> bool:
        """True without tokens configured, else only with ``Authorization: Bearer <token>``."""
        if not self._tokens:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return any(hmac.compare_digest(token.strip(), known) for known in self._tokens)

    def record(self, request: Request, status: int, started: float) -> None:
        """Count and log one request: method, path and status, never the query (it may hold PHI)."""
        self._count(status)
        log.info(
            "dicomweb request",
            method=request.method,
            path=request.url.path,
            status=status,
            seconds=round(time.monotonic() - started, 4),
        )


class _Guard:
    """ASGI middleware: bearer tokens, error statuses, and one access-log line per request."""

    def __init__(self, app: ASGIApp, owner: DicomWebApp) -> None:
        self._app = app
        self._owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request, started, status = Request(scope), time.monotonic(), 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self._owner.authorized(request):
                await self._app(scope, receive, send_and_watch)
            else:
                headers = {"WWW-Authenticate": 'Bearer realm="dicomweb"'}
                unauthorized = _error(401, "a bearer token is required", headers)
                await unauthorized(scope, receive, send_and_watch)
        finally:
            self._owner.record(request, status, started)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpError)
    return _error(exc.status, str(exc))


async def _search_error(_request: Request, exc: Exception) -> Response:
    return _error(400, str(exc))


_PATH_WORDS = {"studies", "series", "instances", "metadata"}


def _unknown_path(request: Request) -> Response:
    """No such resource: 400 when a segment is neither a resource name nor a UID, else 404."""
    segments = request.path_params["rest"].split("/")
    if any(s not in _PATH_WORDS and not is_valid_uid(s) for s in segments):
        raise HttpError(400, "malformed path")
    raise HttpError(404, "no such resource")


def _path_keys(request: Request) -> dict[str, str]:
    """The UIDs in the path as journal keys; 400 for anything that is not a valid UID."""
    keys = {}
    for name in _UID_PARAMS:
        value = request.path_params.get(name)
        if value is None:
            continue
        if not is_valid_uid(value):
            raise HttpError(400, f"malformed {name} UID")
        keys[_PATH_KEYS[name]] = value
    return keys


def _check_acceptable(accept: str, records: list[InstanceRecord]) -> None:
    """We send files as stored: a request for another transfer syntax is 406 Not Acceptable."""
    stored = {record.transfer_syntax_uid for record in records}
    for option in accept.split(","):
        media, *parameters = (part.strip() for part in option.split(";"))
        if media not in ("*/*", "multipart/related", "multipart/*"):
            continue
        values = dict(p.split("=", 1) for p in parameters if "=" in p)
        wanted_type = values.get("type", '"application/dicom"').strip('"')
        syntax = values.get("transfer-syntax", "*").strip('"')
        if wanted_type == "application/dicom" and (syntax == "*" or stored <= {syntax}):
            return
        if media == "*/*":
            return
    raise HttpError(406, "only multipart/related; type=application/dicom as stored is available")


def _multipart(records: list[InstanceRecord], paths: list[Path], boundary: str) -> Iterator[bytes]:
    """Each file as one part, read in chunks."""
    for record, path in zip(records, paths, strict=True):
        syntax = (
            f"; transfer-syntax={record.transfer_syntax_uid}" if record.transfer_syntax_uid else ""
        )
        yield f"--{boundary}\r\nContent-Type: application/dicom{syntax}\r\n\r\n".encode()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _json(body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body).encode(), media_type=DICOM_JSON, headers=headers)


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps({"error": reason}).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
