"""Operations tools: ``python -m dicomserver.cli <command>``.

Commands (settings come from the environment, as for the function app):

``resync --study UID | --patient ID | --all [--enqueue]``
    Rebuild studies in FHIR from the index, with a progress bar (``--enqueue``
    puts fhir-sync messages on the queue for the function app instead).
``requeue-poison``
    Move every message of ``fhir-sync-poison`` back onto ``fhir-sync``.
``cohort --fhir 'ImagingStudy?...' | 'Patient?...' [--download DIR]``
    List the studies matching a FHIR search (patient, study, modalities, DICOMweb URL) and
    optionally download them over WADO-RS with a manifest (see :mod:`dicomserver.cohort`).
    Options default from ``FHIR_URL``, ``FHIR_BEARER_TOKEN``, ``FHIR_SCOPE``, ``DICOM_TOKEN``
    and ``DICOM_SCOPE``.
``replay-blob-poison``
    Run the repair or import again for every blob the Functions host parked in
    ``webjobs-blobtrigger-poison`` after its trigger kept failing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import cohort as cohorts
from .errors import DicomServerError
from .fhir.client import FhirClient
from .fhir.sync import sync_study
from .identifiers import DEFAULT_PARTITION, StudyKey
from .ingest import ensure_indexed, import_instance
from .settings import Settings
from .stores.layout import parse_sync_message
from .wiring import Services, blob_poison_queue, build_services, dicomweb_base_url, fhir_client
from .wiring import credential as wiring_credential

log = logging.getLogger(__name__)


def _studies(args: argparse.Namespace, services: Services) -> list[StudyKey]:
    if args.study:
        return [StudyKey(args.partition, args.study)]
    return list(services.index.list_studies(args.partition, args.patient))


def resync(args: argparse.Namespace) -> int:
    """Resync the selected studies; returns the process exit code."""
    settings = Settings.from_env()
    services = build_services(settings)
    studies = _studies(args, services)
    if args.enqueue:
        services.sync_queue.enqueue_studies(studies)
        print(f"queued {len(studies)} studies on {settings.fhir_sync_queue}")
        return 0
    client = fhir_client(settings)
    if client is None:
        print("FHIR_URL is not set", file=sys.stderr)
        return 2
    with client:
        counts, failures = _resync_all(args, settings, services, client, studies)
    print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no studies")
    return 1 if failures else 0


def _resync_all(
    args: argparse.Namespace, settings: Settings, services: Services, client: FhirClient, studies: list[StudyKey]
) -> tuple[dict[str, int], int]:
    counts: dict[str, int] = {}
    failures = 0
    for study in tqdm(studies, desc="resync", unit="study", disable=args.quiet):
        try:
            outcome = sync_study(
                index=services.index,
                blobs=services.blobs,
                fhir=client,
                study=study,
                dicomweb_base_url=dicomweb_base_url(settings),
                patient_identifier_system=settings.fhir_patient_identifier_system,
            ).value
        except Exception as exc:  # report and go on: one bad study must not stop a full resync
            log.error("resync failed study=%s: %s", study.study_instance_uid, exc)
            outcome, failures = "failed", failures + 1
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts, failures


def requeue_poison(args: argparse.Namespace) -> int:
    """Move poison messages back to the fhir-sync queue (with their attempt count reset)."""
    services = build_services(Settings.from_env())
    moved = 0
    while bodies := services.sync_queue.drain_poison():
        studies = [parsed[0] for body in bodies if (parsed := parse_sync_message(body)) is not None]
        services.sync_queue.enqueue_studies(studies)
        moved += len(studies)
    print(f"requeued {moved} messages")
    return 0


def replay_blob_poison(args: argparse.Namespace) -> int:
    """Run the blob triggers again for every blob the host parked in webjobs-blobtrigger-poison."""
    settings = Settings.from_env()
    services = build_services(settings)
    outcomes: dict[str, int] = {}

    def replay(function: str, container: str, name: str) -> bool:
        if function == "ensure_indexed" and container == settings.instance_container:
            outcome = ensure_indexed(services.blobs, services.index, services.sync_queue, name)
        elif function == "import_instances" and container == settings.import_container:
            outcome = import_instance(services.blobs, services.index, services.sync_queue, services.imports, name)
        else:
            log.warning("kept a poison message for function=%s container=%s", function, container)
            return False
        outcomes[outcome.value] = outcomes.get(outcome.value, 0) + 1
        return True

    replayed, kept = blob_poison_queue(settings).drain(replay)
    details = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
    print(f"replayed {replayed} blobs ({details or 'none'}); kept {kept} messages")
    return 0


def cohort(args: argparse.Namespace) -> int:
    """List (and with ``--download``, retrieve) the studies of a FHIR search; returns the exit code."""
    if not args.fhir_url:
        print("no FHIR base URL: pass --fhir-url or set FHIR_URL", file=sys.stderr)
        return 2
    fhir_scope = args.fhir_scope or f"{args.fhir_url.rstrip('/')}/.default"
    shared: list[Any] = []

    def credential() -> Any:  # one DefaultAzureCredential (AZURE_CLIENT_ID honoured) for both services
        if not shared:
            shared.append(wiring_credential(Settings.from_env()))
        return shared[0]

    try:
        studies = cohorts.find_studies(
            args.fhir_url,
            args.fhir,
            token=cohorts.TokenSource.for_url(args.fhir_url, args.fhir_token, fhir_scope, credential),
            study_params=args.studies,
            strict=not args.lenient,
        )
        if args.json:
            print(json.dumps([asdict(s) for s in studies], indent=1))
        else:
            print("patient\tname\tstudy\tmodalities\turl")
            for s in studies:
                print(f"{s.patient}\t{s.patient_name}\t{s.study_instance_uid}\t{','.join(s.modalities)}\t{s.study_url}")
        print(f"{len(studies)} studies of {len({s.patient for s in studies})} patients", file=sys.stderr)
        if args.download is None or not studies:
            return 0
        first_url = next((s.study_url for s in studies if s.study_url), "")
        result = cohorts.download_studies(
            studies,
            Path(args.download),
            token=cohorts.TokenSource.for_url(first_url, args.dicom_token, args.dicom_scope, credential),
            concurrency=args.concurrency,
            search=args.fhir,
            progress=not args.quiet,
        )
    except (ValueError, cohorts.CohortError, DicomServerError) as exc:
        print(f"cohort: {exc}", file=sys.stderr)
        return 1
    print(
        f"downloaded {result.downloaded} instances ({result.bytes} bytes), skipped {result.skipped} already present; "
        f"manifest {Path(args.download) / 'manifest.json'}",
        file=sys.stderr,
    )
    return 0


def _add_cohort(commands: Any) -> None:
    env = os.environ
    parser = commands.add_parser("cohort", help="studies of a FHIR search on ImagingStudy or Patient, downloadable")
    parser.add_argument("--fhir", required=True, metavar="SEARCH", help="'ImagingStudy?...' or 'Patient?...'")
    parser.add_argument("--fhir-url", default=env.get("FHIR_URL"), help="FHIR base URL (default: FHIR_URL)")
    parser.add_argument("--studies", default="", metavar="PARAMS", help="ImagingStudy parameters for a Patient search")
    parser.add_argument("--lenient", action="store_true", help="let the FHIR server ignore parameters it lacks")
    parser.add_argument("--json", action="store_true", help="print the studies as JSON")
    parser.add_argument("--download", metavar="DIR", help="retrieve every instance into DIR with manifest.json/csv")
    parser.add_argument("--concurrency", type=int, default=4, help="parallel retrievals (default 4)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--fhir-token", default=env.get("FHIR_BEARER_TOKEN"), help="static FHIR bearer token")
    parser.add_argument("--fhir-scope", default=env.get("FHIR_SCOPE"), help="Entra scope (default {fhir-url}/.default)")
    parser.add_argument("--dicom-token", default=env.get("DICOM_TOKEN"), help="static DICOMweb bearer token")
    parser.add_argument(
        "--dicom-scope",
        default=env.get("DICOM_SCOPE", f"{cohorts.AZURE_DICOM_AUDIENCE}/.default"),
        help="Entra scope of the DICOM service (default: the Azure DICOM service's)",
    )
    parser.set_defaults(handler=cohort)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dicomserver.cli", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sync = commands.add_parser("resync", help="rebuild studies in FHIR from the index")
    which = sync.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", help="one StudyInstanceUID")
    which.add_argument("--patient", help="every study of one PatientID")
    which.add_argument("--all", action="store_true", help="every study")
    sync.add_argument("--partition", default=DEFAULT_PARTITION)
    sync.add_argument("--enqueue", action="store_true", help="queue fhir-sync messages instead of syncing here")
    sync.add_argument("--quiet", action="store_true", help="no progress bar")
    sync.set_defaults(handler=resync)
    poison = commands.add_parser("requeue-poison", help="move fhir-sync-poison messages back to fhir-sync")
    poison.set_defaults(handler=requeue_poison)
    blob_poison = commands.add_parser(
        "replay-blob-poison", help="run the blob triggers again for blobs parked in webjobs-blobtrigger-poison"
    )
    blob_poison.set_defaults(handler=replay_blob_poison)
    _add_cohort(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
