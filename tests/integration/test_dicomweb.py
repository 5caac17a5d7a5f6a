"""DICOMweb: consumers search (QIDO-RS) and fetch (WADO-RS) what the listener received."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from tests.certs import CertificateAuthority
from tests.conftest import ListenerFactory
from tests.modality import Modality, make_study
from tests.support import (
    DICOMDIR_TESTS,
    AmqpTopology,
    ListenerProcess,
    dicom_files,
    free_port,
    metric_value,
    require_broker,
    storescu,
    wait_for,
)

TOKEN = "s3cret-token-for-tests"
ANY_SYNTAX = (("application/dicom", "*"),)


@dataclass
class Served:
    """A listener serving DICOMweb over the studies it received, and what was sent to it."""

    listener: ListenerProcess
    url: str
    sent: dict[str, Path]  # SOP Instance UID -> the file sent
    amqp: AmqpTopology

    def client(self, token: str | None = TOKEN) -> DICOMwebClient:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return DICOMwebClient(self.url, headers=headers)

    def studies(self) -> dict[str, list[Dataset]]:
        """Study UID -> the datasets sent for it (headers only)."""
        studies: dict[str, list[Dataset]] = collections.defaultdict(list)
        for path in self.sent.values():
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            studies[dataset.StudyInstanceUID].append(dataset)
        return studies


def dicomweb_env(tmp_path: Path, port: int) -> dict[str, str]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# consumers\n{TOKEN}\n")
    return {
        "LISTENER_DICOMWEB__ENABLED": "true",
        "LISTENER_DICOMWEB__PORT": str(port),
        "LISTENER_DICOMWEB__TOKEN_FILE": str(tokens),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The dicomdirtests studies sent once with DCMTK's storescu, for this module's tests."""
    require_broker()
    tmp_path = tmp_path_factory.mktemp("dicomweb")
    topology = AmqpTopology()
    port = free_port()
    listener = ListenerProcess(
        data_dir=tmp_path / "data",
        env={
            **topology.env(),
            "LISTENER_AGGREGATOR__QUIET_PERIOD_SECONDS": "0.5",
            "LISTENER_STORAGE__MIN_FREE_MB": "64",
            "LISTENER_METRICS__HOST": "127.0.0.1",
            "LISTENER_METRICS__PORT": str(free_port()),
            **dicomweb_env(tmp_path, port),
        },
    ).start()
    try:
        files = dicom_files(DICOMDIR_TESTS)
        run = storescu(listener.port, files)
        assert len(run.succeeded) == len(files), run.output
        sent = {
            str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID): path
            for path in files
        }
        yield Served(listener, f"http://127.0.0.1:{port}/dicomweb", sent, topology)
    finally:
        listener.kill()
        topology.delete()


def test_qido_finds_every_study_with_its_counts(served: Served) -> None:
    """A study search returns each received study with its series and instance counts."""
    found = served.client().search_for_studies()

    by_uid = {Dataset.from_json(item).StudyInstanceUID: Dataset.from_json(item) for item in found}
    for study_uid, datasets in served.studies().items():
        assert by_uid[study_uid].NumberOfStudyRelatedInstances == len(datasets)
        series = {dataset.SeriesInstanceUID for dataset in datasets}
        assert by_uid[study_uid].NumberOfStudyRelatedSeries == len(series)
    assert set(by_uid) == set(served.studies())


def test_qido_matches_patient_accession_date_range_and_modality(served: Served) -> None:
    """PatientID, AccessionNumber, StudyDate ranges and ModalitiesInStudy narrow the studies."""
    client = served.client()
    study_uid, datasets = next(iter(served.studies().items()))
    first = datasets[0]

    by_patient = client.search_for_studies(search_filters={"PatientID": first.PatientID})
    by_date = client.search_for_studies(
        search_filters={"StudyDate": f"{first.StudyDate}-{first.StudyDate}"}
    )
    by_modality = client.search_for_studies(search_filters={"ModalitiesInStudy": first.Modality})
    nothing = client.search_for_studies(search_filters={"StudyDate": "19000101-19000102"})

    for results in (by_patient, by_date, by_modality):
        assert study_uid in {Dataset.from_json(item).StudyInstanceUID for item in results}
    assert all(Dataset.from_json(i).PatientID == first.PatientID for i in by_patient)
    assert nothing == []
    if first.get("AccessionNumber"):
        by_accession = client.search_for_studies(
            search_filters={"AccessionNumber": first.AccessionNumber}
        )
        assert study_uid in {Dataset.from_json(item).StudyInstanceUID for item in by_accession}


def test_qido_pages_with_limit_and_offset(served: Served) -> None:
    """Pages of limit and offset go through the studies without overlap."""
    client = served.client()
    everything = client.search_for_studies()

    pages = [client.search_for_studies(limit=1, offset=n) for n in range(len(everything))]

    assert all(len(page) == 1 for page in pages)
    uids = [Dataset.from_json(page[0]).StudyInstanceUID for page in pages]
    assert sorted(uids) == sorted(Dataset.from_json(item).StudyInstanceUID for item in everything)


def test_qido_finds_series_and_instances(served: Served) -> None:
    """Series by Modality and instances by SOPInstanceUID, within a study and across studies."""
    client = served.client()
    study_uid, datasets = next(iter(served.studies().items()))
    one = datasets[0]

    series = client.search_for_series(study_uid, search_filters={"Modality": one.Modality})
    instances = client.search_for_instances(search_filters={"SOPInstanceUID": one.SOPInstanceUID})

    assert one.SeriesInstanceUID in {Dataset.from_json(s).SeriesInstanceUID for s in series}
    assert [Dataset.from_json(i).SOPInstanceUID for i in instances] == [one.SOPInstanceUID]
    assert Dataset.from_json(instances[0]).SOPClassUID == one.SOPClassUID


def test_metadata_lists_every_instance_of_a_study(served: Served) -> None:
    """Study metadata has one dataset per received instance, with its patient and series."""
    for study_uid, datasets in served.studies().items():
        metadata = served.client().retrieve_study_metadata(study_uid)

        found = {Dataset.from_json(item).SOPInstanceUID for item in metadata}
        assert found == {dataset.SOPInstanceUID for dataset in datasets}
        sample = Dataset.from_json(metadata[0])
        assert sample.StudyInstanceUID == study_uid
        assert sample.PatientID == datasets[0].PatientID


def test_retrieve_returns_every_instance_identical_to_what_was_sent(served: Served) -> None:
    """Each retrieved instance equals the file sent: header and pixel data, transfer syntax kept."""
    client = served.client()
    for study_uid, datasets in served.studies().items():
        retrieved = client.retrieve_study(study_uid, media_types=ANY_SYNTAX)

        assert len(retrieved) == len(datasets)
        for dataset in retrieved:
            original = pydicom.dcmread(served.sent[dataset.SOPInstanceUID])
            assert dataset == original
            assert dataset.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
            if "PixelData" in original:
                assert dataset.PixelData == original.PixelData


def test_retrieve_series_and_single_instance(served: Served) -> None:
    """Series and instance retrieval return exactly the instances they name."""
    client = served.client()
    one = next(iter(served.studies().values()))[0]

    series = client.retrieve_series(
        one.StudyInstanceUID, one.SeriesInstanceUID, media_types=ANY_SYNTAX
    )
    instance = client.retrieve_instance(
        one.StudyInstanceUID, one.SeriesInstanceUID, one.SOPInstanceUID, media_types=ANY_SYNTAX
    )

    assert one.SOPInstanceUID in {dataset.SOPInstanceUID for dataset in series}
    assert {dataset.SeriesInstanceUID for dataset in series} == {one.SeriesInstanceUID}
    assert instance.SOPInstanceUID == one.SOPInstanceUID


def test_requests_without_a_valid_token_get_401(served: Served) -> None:
    """No token, or a wrong one: 401 with a Bearer challenge, and nothing about the studies."""
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = requests.get(f"{served.url}/studies", headers=headers, timeout=10)

        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "0020000D" not in response.text


def test_unknown_uids_get_404_and_malformed_ones_400(served: Served) -> None:
    """An unknown (valid) UID is 404; a malformed UID or path traversal is 400; nothing leaks."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    one = next(iter(served.studies().values()))[0]
    cases = {
        "/studies/1.2.3.4.5.6.7": 404,
        "/studies/1.2.3.4.5.6.7/metadata": 404,
        f"/studies/{one.StudyInstanceUID}/series/1.2.3.999": 404,
        f"/studies/{one.StudyInstanceUID}/series/{one.SeriesInstanceUID}/instances/1.2.3": 404,
        "/studies/not-a-uid": 400,
        "/studies/1.2.3.04": 400,
        "/studies/..%2F..%2Fjournal.sqlite3": 400,
        "/studies/1.2.3/series/%2E%2E": 400,
        "/studies?NoSuchAttributeAtAll=1": 400,
        "/studies?limit=-1": 400,
    }
    for path, status in cases.items():
        response = requests.get(served.url + path, headers=auth, timeout=10)
        assert response.status_code == status, (path, response.text)


def test_access_log_carries_no_patient_data_and_metrics_count_by_status(served: Served) -> None:
    """A search by PatientID logs the request without its query; requests counted per status."""
    patient_id = next(iter(served.studies().values()))[0].PatientID
    served.client().search_for_studies(search_filters={"PatientID": patient_id})
    requests.get(f"{served.url}/studies", timeout=10)  # 401

    lines = [line for line in served.listener.logs() if line.get("event") == "dicomweb request"]
    assert lines
    assert patient_id not in json.dumps(lines)
    metrics = requests.get(served.listener.metrics_url + "/metrics", timeout=10).text
    assert metric_value(metrics, "dicom_listener_dicomweb_requests_total", 'status="200"') >= 1
    assert metric_value(metrics, "dicom_listener_dicomweb_requests_total", 'status="401"') >= 1


def test_imagingstudy_endpoint_points_at_the_dicomweb_service(
    served: Served, amqp: AmqpTopology
) -> None:
    """Each published ImagingStudy carries a contained WADO-RS Endpoint at the service's URL."""
    messages = served.amqp.drain(len(served.studies()), timeout=30)

    for message in messages:
        resource = message.resource
        endpoints = [c for c in resource.get("contained", []) if c["resourceType"] == "Endpoint"]
        assert [endpoint["address"] for endpoint in endpoints] == [served.url]
        assert endpoints[0]["connectionType"]["code"] == "dicom-wado-rs"
        client = served.client()
        assert client.search_for_studies(search_filters={"StudyInstanceUID": resource["id"]})


def test_files_removed_by_retention_are_404_while_metadata_stays(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """After instance_retention_days removed a study's files: retrieve 404, metadata still 200."""
    port, data_dir = free_port(), tmp_path / "data"
    env = dicomweb_env(tmp_path, port)
    listener = start_listener(data_dir=data_dir, **env)
    files = dicom_files(DICOMDIR_TESTS)[:3]
    assert len(storescu(listener.port, files).succeeded) == 3
    amqp.drain_until_quiet(quiet=1.0, timeout=30)
    listener.stop()
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID

    start_listener(data_dir=data_dir, LISTENER_STORAGE__INSTANCE_RETENTION_DAYS="0.00001", **env)
    url = f"http://127.0.0.1:{port}/dicomweb/studies/{study_uid}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    wait_for(
        lambda: requests.get(url, headers=auth, timeout=10).status_code == 404,
        timeout=20,
        what="retention to remove the files",
    )

    assert requests.get(url + "/metadata", headers=auth, timeout=10).status_code == 200


def test_a_large_study_is_streamed_in_constant_memory(
    start_listener: ListenerFactory, tmp_path: Path
) -> None:
    """Retrieving a 400-instance, 100 MiB study raises no listener process's peak memory > 30 MB."""
    port = free_port()
    listener = start_listener(**dicomweb_env(tmp_path, port))
    datasets = make_study(400, series=4)
    pixels = bytes(range(256)) * 1024  # 256 KiB: 512 x 256 pixels of 16 bits
    for dataset in datasets:
        dataset.Rows, dataset.Columns, dataset.PixelData = 512, 256, pixels
    Modality(listener.port).send_all(datasets)
    assert listener.process is not None
    before = _peak_rss_mb_by_process(listener.process.pid)

    url = f"http://127.0.0.1:{port}/dicomweb/studies/{datasets[0].StudyInstanceUID}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    received = 0
    with requests.get(url, headers=auth, stream=True, timeout=120) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(1024 * 1024):
            received += len(chunk)

    assert received > 400 * len(pixels)
    after = _peak_rss_mb_by_process(listener.process.pid)
    assert len(after) >= 2  # the listener and its DICOMweb process
    assert max(after[pid] - before.get(pid, 0.0) for pid in after) < 30


def _peak_rss_mb_by_process(pid: int) -> dict[int, float]:
    """Peak resident memory (VmHWM, MB) of ``pid`` and each of its child processes."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    peaks = {}
    for process in [pid, *map(int, children)]:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks[process] = int(line.split()[1]) / 1024
    return peaks


def test_dicomweb_over_https_with_the_configured_certificate(
    start_listener: ListenerFactory, tmp_path: Path
) -> None:
    """With dicomweb.tls set the service speaks HTTPS only, with the configured certificate."""
    authority = CertificateAuthority(tmp_path)
    server = authority.issue("dicomweb", server=True)
    port = free_port()
    start_listener(
        LISTENER_DICOMWEB__TLS__CERT_FILE=str(server.cert),
        LISTENER_DICOMWEB__TLS__KEY_FILE=str(server.key),
        **dicomweb_env(tmp_path, port),
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}

    secure = requests.get(
        f"https://127.0.0.1:{port}/dicomweb/studies",
        headers=auth,
        verify=str(authority.pem.cert),
        timeout=10,
    )
    assert secure.status_code == 204  # nothing stored yet
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/dicomweb/studies", headers=auth, timeout=10)


def test_the_serving_process_ends_when_the_listener_is_killed(
    start_listener: ListenerFactory, tmp_path: Path
) -> None:
    """DICOMweb runs in a child process; a SIGKILLed listener leaves no orphan holding the port."""
    port = free_port()
    listener = start_listener(**dicomweb_env(tmp_path, port))
    assert listener.process is not None
    children = Path(f"/proc/{listener.process.pid}/task/{listener.process.pid}/children")
    serving = [int(pid) for pid in children.read_text().split()]
    assert requests.get(f"http://127.0.0.1:{port}/dicomweb/studies", timeout=10).status_code == 401

    listener.kill()

    wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in serving),
        timeout=10,
        what="the DICOMweb process to end",
    )
