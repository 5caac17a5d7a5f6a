"""Any storage SOP class a sender proposes is accepted and stored: retired, private, made up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.association import Association

from tests.conftest import ListenerFactory
from tests.modality import CT_IMAGE_STORAGE, make_study
from tests.support import AmqpTopology, latest_versions, storescu

EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
RETIRED_US = "1.2.840.10008.5.1.4.1.1.6"  # Ultrasound Image Storage (Retired)
SIEMENS_CSA_NON_IMAGE = "1.3.12.2.1107.5.9.1"
MADE_UP_PRIVATE = "1.2.826.0.1.3680043.10.1234.99.1"
MIXED_CLASSES = [CT_IMAGE_STORAGE, RETIRED_US, SIEMENS_CSA_NON_IMAGE, MADE_UP_PRIVATE]
STORAGE_NAMES = ("Storage", "Storage SOP Class", "Storage - Trial")  # not Storage Commitment
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # a service we do not offer


def associate(port: int, sop_classes: list[str]) -> Association:
    """A pynetdicom association proposing each of ``sop_classes`` with Explicit VR LE."""
    ae = AE(ae_title="MODALITY")
    for uid in sop_classes:
        ae.add_requested_context(uid, EXPLICIT_LITTLE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    association = ae.associate("127.0.0.1", port, ae_title="DICOM-LISTENER")
    assert association.is_established
    return association


def study_of_classes(sop_classes: list[str]) -> list[Dataset]:
    """One study, one instance per entry of ``sop_classes``, each with that SOP Class UID."""
    study = make_study(len(sop_classes), series=1)
    for dataset, uid in zip(study, sop_classes, strict=True):
        dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = UID(uid)
    return study


def accepted_classes(association: Association) -> set[str]:
    """Abstract syntaxes of the presentation contexts the listener accepted."""
    return {str(context.abstract_syntax) for context in association.accepted_contexts}


def sop_classes_published(amqp: AmqpTopology, study_uid: str) -> dict[str, str]:
    """SOP Instance UID -> sopClass UID in the newest published version of ``study_uid``."""
    resource: dict[str, Any] = latest_versions(amqp.drain_until_quiet(quiet=1.5, timeout=30))[
        study_uid
    ]
    return {
        instance["uid"]: instance["sopClass"]["code"].removeprefix("urn:oid:")
        for series in resource["series"]
        for instance in series["instance"]
    }


def send_and_release(association: Association, study: list[Dataset]) -> list[int]:
    """C-STORE each dataset in order (-1: no response), release; the statuses."""
    statuses = [
        int(association.send_c_store(dataset).get("Status", -1))
        if association.is_established
        else -1
        for dataset in study
    ]
    association.release()
    assert association.is_released, "the association must end in a normal release"
    return statuses


def test_standard_retired_vendor_and_made_up_classes_share_one_association(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """Standard, retired, vendor-private and made-up classes, interleaved twice: all stored."""
    listener = start_listener(quiet_period=0.5)
    classes = MIXED_CLASSES * 2
    study = study_of_classes(classes)
    association = associate(listener.port, MIXED_CLASSES)
    assert accepted_classes(association) == set(MIXED_CLASSES)

    statuses = send_and_release(association, study)

    assert statuses == [0x0000] * len(study)
    expected = {str(d.SOPInstanceUID): uid for d, uid in zip(study, classes, strict=True)}
    assert sop_classes_published(amqp, str(study[0].StudyInstanceUID)) == expected


def test_every_retired_storage_class_goes_through_one_association(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """Each retired storage class in pydicom's dictionary: accepted, acknowledged, published."""
    retired = [
        uid
        for uid, (name, kind, _info, retirement, _keyword) in UID_dictionary.items()
        if kind == "SOP Class" and retirement == "Retired" and name.endswith(STORAGE_NAMES)
    ]
    assert len(retired) >= 20, retired  # pydicom 3.0 names 20
    listener = start_listener(quiet_period=0.5)
    study = study_of_classes(retired)
    association = associate(listener.port, retired)
    assert accepted_classes(association) == set(retired)

    statuses = send_and_release(association, study)

    assert statuses == [0x0000] * len(study)
    expected = {str(d.SOPInstanceUID): uid for d, uid in zip(study, retired, strict=True)}
    assert sop_classes_published(amqp, str(study[0].StudyInstanceUID)) == expected


def test_without_unknown_classes_private_ones_are_refused_at_negotiation(
    start_listener: ListenerFactory, amqp: AmqpTopology
) -> None:
    """accept_unknown_sop_classes=false: private classes refused up front, known ones stored."""
    listener = start_listener(quiet_period=0.5, LISTENER_DICOM__ACCEPT_UNKNOWN_SOP_CLASSES="false")
    association = associate(listener.port, [*MIXED_CLASSES, STUDY_ROOT_FIND])
    accepted = accepted_classes(association)
    known = study_of_classes([CT_IMAGE_STORAGE, RETIRED_US])

    statuses = send_and_release(association, known)

    assert accepted == {CT_IMAGE_STORAGE, RETIRED_US}
    assert statuses == [0x0000, 0x0000]
    assert set(sop_classes_published(amqp, str(known[0].StudyInstanceUID)).values()) == {
        CT_IMAGE_STORAGE,
        RETIRED_US,
    }


def test_services_we_do_not_offer_are_still_refused(start_listener: ListenerFactory) -> None:
    """Unknown storage classes are accepted, Query/Retrieve and unknown DICOM services are not."""
    listener = start_listener()
    unknown_dicom_service = "1.2.840.10008.5.1.4.9999.1"  # not under the storage arc
    association = associate(
        listener.port, [CT_IMAGE_STORAGE, STUDY_ROOT_FIND, unknown_dicom_service]
    )

    accepted = accepted_classes(association)
    association.release()

    assert accepted == {CT_IMAGE_STORAGE}


def test_storescu_sends_a_folder_where_a_retired_us_instance_comes_third(
    start_listener: ListenerFactory, amqp: AmqpTopology, tmp_path: Path
) -> None:
    """DCMTK's storescu over a folder with a retired US instance among CT ones: all stored."""
    classes = [CT_IMAGE_STORAGE] * 2 + [RETIRED_US] + [CT_IMAGE_STORAGE] * 15
    study = study_of_classes(classes)
    files = []
    for index, dataset in enumerate(study):
        files.append(tmp_path / f"{index:02}.dcm")
        dataset.save_as(files[-1])
    listener = start_listener(quiet_period=0.5)

    run = storescu(listener.port, files, "-R")  # propose exactly the classes of the files

    assert run.succeeded == files, run.output[-4000:]
    expected = {str(d.SOPInstanceUID): uid for d, uid in zip(study, classes, strict=True)}
    assert sop_classes_published(amqp, str(study[0].StudyInstanceUID)) == expected
