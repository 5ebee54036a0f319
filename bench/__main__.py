"""``make bench``: this service beside Orthanc and beside the raw storage floor, in one run.

    python -m bench [--quick] [--peer orthanc|none] [--instances 10000] [--stow-instances N] ...

Starts Azurite and the Cosmos DB stand-in on free ports and the local Functions host (HTTP only,
authentication off), then Orthanc 1.10 with its DICOMweb plugin (installed from Debian with apt-get
if missing), and sends both the same synthetic CT data (``bench/dataset.py``: studies of 2 series x
50 instances and one 500-instance series, 128 x 128 x 16-bit slices of ~33 KB, fresh UIDs each run):

* STOW-RS instances/s: 1 instance/request at concurrency 1 and 4, 20 instances/request at
  concurrency 4; at concurrency 4 the workers share one study at a time, as a modality sends it;
* study metadata of a 100-instance and of the 500-instance study, series metadata of the
  500-instance series: p50/p95 latency;
* WADO-RS whole-instance retrieve at concurrency 4: instances/s;
* QIDO-RS p50/p95 of a fixed query mix once ``--instances`` instances are stored (loaded with STOW
  20/request at concurrency 4), beside the Cosmos stand-in's own time for the same study query;
* the storage floor, raw with the SDKs on the same emulators, at concurrency 1 and 4: per instance
  one Azurite blob put of the same bytes then one Cosmos create_item of a ~5 KB document;
* storage operations per STOW instance and per metadata request, summed from the service's
  ``x-dicom-storage-ops`` response header;
* the change feed (ours only: Orthanc has none): its share of each STOW's index round trips and
  request charge, from the log documents the STOW created in the ``changefeed`` container (counted
  with the SDK before and after, 2 round trips each), and after the QIDO load a read of 100 entries
  (``/changefeed?offset=X&limit=100``, with and without metadata) beside a QIDO of 100 instances
  (``/instances?limit=100``): p50/p95 and round trips per request.

Prints one table (ours, orthanc, floor, ours/orthanc, ours/floor, then the storage operations, then
the change feed's share of the STOW cost) and writes ``bench-results/bench-<time>.json``.  Everything
started is stopped on exit, Ctrl-C included.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.dataset import Generator, Instance, Study, flatten
from scripts import devstack

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "bench-boundary-7f3a"
ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: Storage round trips the service made for one request: ``blob=2;index=3;queue=1;ru=12.50``.
OPS_HEADER = "x-dicom-storage-ops"
OPS_KINDS = ("blob", "index", "queue", "ru")
DICOM_JSON = {"Accept": "application/dicom+json"}
FEED_JSON = {"Accept": "application/json"}
WHOLE_INSTANCE = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
STOW_MODES = (
    # key, label, concurrency, instances per request, floor compared against
    ("stow_1_c1", "STOW 1/request c=1", 1, 1, "floor_c1"),
    ("stow_1_c4", "STOW 1/request c=4", 4, 1, "floor_c4"),
    ("stow_20_c4", "STOW 20/request c=4", 4, 20, "floor_c4"),
)
METADATA = (
    ("study_metadata_100", "study metadata"),
    ("study_metadata_500", "study metadata"),
    ("series_metadata_500", "series metadata"),
)
#: Defaults, and the ``--quick`` ones.
#: STOW instances are per mode, in the order of STOW_MODES: about 10 s each at today's speed.
SCALES = {
    "default": {"stow_instances": (800, 1000, 1400), "long_series": 500, "instances": 10_000,
                "wado_instances": 1000, "floor_instances": 1000, "repeat": 20},
    "quick": {"stow_instances": (100, 100, 100), "long_series": 500, "instances": 1_000,
              "wado_instances": 100, "floor_instances": 200, "repeat": 10},
}  # fmt: skip

T = TypeVar("T")
R = TypeVar("R")


# -- helpers ------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, flush=True)


def multipart(parts: Sequence[bytes]) -> tuple[bytes, str]:
    body = b"".join(
        b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
    )
    return (
        body + b"--" + BOUNDARY.encode() + b"--\r\n",
        f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
    )


def concurrently(fn: Callable[[T], R], items: Sequence[T], concurrency: int) -> list[R]:
    """``fn`` over ``items`` in order of submission on ``concurrency`` threads.

    On an error or Ctrl-C the calls not yet started are cancelled instead of run to the end.
    """
    pool = ThreadPoolExecutor(concurrency)
    try:
        results = list(pool.map(fn, items))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))],
    }


@dataclass
class Ops:
    """Sum of the ``x-dicom-storage-ops`` headers of a set of responses (thread-safe)."""

    responses: int = 0
    with_header: int = 0
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OPS_KINDS, 0.0))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, response: httpx.Response) -> None:
        value = response.headers.get(OPS_HEADER)
        with self._lock:
            self.responses += 1
            if value is None:
                return
            self.with_header += 1
            for item in value.split(";"):
                name, _, number = item.strip().partition("=")
                try:
                    self.totals[name] = self.totals.get(name, 0.0) + float(number)
                except ValueError:
                    pass

    def per(self, units: int) -> dict[str, float] | None:
        """Operations per unit (instance or request); ``None`` when no response had the header."""
        if not self.with_header or not units:
            return None
        if self.with_header < self.responses:
            log(f"  note: {self.responses - self.with_header} of {self.responses} responses lacked {OPS_HEADER}")
        return {k: v / units for k, v in self.totals.items()}


# -- the servers --------------------------------------------------------------------------------


@contextmanager
def our_service(work: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The emulators and the local host; yields (DICOMweb base URL, app settings)."""
    work.mkdir(parents=True, exist_ok=True)
    ports = [devstack.free_port() for _ in range(4)]
    with devstack.local_stack(work / "azurite", ports[0], ports[1], ports[2]) as env:
        env = {
            **os.environ,
            **env,
            "DICOM_AUTH_MODE": "none",
            "DICOM_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports[3]}",
            # as `make run`: one Python worker per core, at most 4
            "FUNCTIONS_WORKER_PROCESS_COUNT": os.environ.get(
                "FUNCTIONS_WORKER_PROCESS_COUNT", str(min(4, os.cpu_count() or 1))
            ),
        }
        host_log = work / "host.log"
        with open(host_log, "wb") as out:
            host = subprocess.Popen(
                [sys.executable, "-m", "scripts.localhost", "--port", str(ports[3]), "--no-triggers"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            devstack.wait_for_port("127.0.0.1", ports[3], 60, host)
            yield f"http://127.0.0.1:{ports[3]}/v2", env
        except Exception:
            tail = host_log.read_text(errors="replace").splitlines()[-30:]
            log("--- last lines of the host's log ---\n" + "\n".join(tail))
            raise
        finally:
            devstack.stop(host)


def ensure_orthanc() -> str:
    orthanc = shutil.which("Orthanc")
    if orthanc and ORTHANC_PLUGIN.exists():
        return orthanc
    log("installing orthanc and orthanc-dicomweb from Debian ...")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "orthanc", "orthanc-dicomweb"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return shutil.which("Orthanc") or "/usr/sbin/Orthanc"


@contextmanager
def orthanc(work: Path) -> Iterator[str]:
    """Orthanc with its own storage on a loopback port; yields its DICOMweb root."""
    binary = ensure_orthanc()
    work.mkdir(parents=True, exist_ok=True)
    port = devstack.free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpServerEnabled": True,
        "Plugins": [str(ORTHANC_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "HttpThreadsCount": 50,
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    with open(work / "orthanc.log", "wb") as out:
        proc = subprocess.Popen(
            [binary, str(work / "orthanc.json")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        devstack.wait_for_port("127.0.0.1", port, 60, proc)
        yield f"http://127.0.0.1:{port}/dicom-web"
    finally:
        devstack.stop(proc)


# -- the measures -------------------------------------------------------------------------------


def batches(studies: Sequence[Study], per_request: int) -> list[list[Instance]]:
    """Requests of ``per_request`` instances, study after study (a request never mixes studies).

    Sent in this order on N threads, the N requests in flight carry instances of the same study.
    """
    return [study[i : i + per_request] for study in studies for i in range(0, len(study), per_request)]


def stow(
    client: httpx.Client, base: str, studies: Sequence[Study], concurrency: int, per_request: int, label: str = ""
) -> dict[str, Any]:
    requests = batches(studies, per_request)
    count = sum(len(b) for b in requests)
    ops = Ops()
    step = max(500, count // 10)
    done = [0, step, 0]  # instances sent, next progress mark, instances sent at the last mark
    lock = threading.Lock()
    start = time.perf_counter()
    last = [start]
    failed: list[tuple[int, int, str]] = []  # (status, instances, start of the body)

    def send(batch: list[Instance]) -> None:
        body, ctype = multipart([i.data for i in batch])
        response = client.post(f"{base}/studies", content=body, headers={"Content-Type": ctype})
        ops.add(response)
        if response.status_code != 200:
            with lock:
                failed.append((response.status_code, len(batch), response.text[:200]))
            return
        if label:
            with lock:
                done[0] += len(batch)
                if done[0] >= done[1]:
                    now = time.perf_counter()
                    recent = (done[0] - done[2]) / (now - last[0])
                    overall = done[0] / (now - start)
                    log(f"  {label}: {done[0]:,}/{count:,} instances, {recent:.1f}/s now, {overall:.1f}/s overall")
                    done[1] += step
                    done[2], last[0] = done[0], now

    concurrently(send, requests, concurrency)
    elapsed = time.perf_counter() - start
    stored = count - sum(n for _, n, _ in failed)
    if failed:
        status, _, text = failed[0]
        log(f"  warning: {len(failed)} of {len(requests)} STOW requests failed; the first: {status} {text[:120]!r}")
    if stored < count * 0.8:
        raise RuntimeError(f"STOW to {base}: {len(failed)} of {len(requests)} requests failed")
    result: dict[str, Any] = {
        "instances": count,
        "requests": len(requests),
        "seconds": round(elapsed, 3),
        # instances stored per second: a failed request's instances are not counted, its time is
        "instances_per_s": stored / elapsed,
        "mb_per_s": sum(len(i.data) for b in requests for i in b) / elapsed / 1e6 * stored / count,
        # the service's storage work, failed requests included, over the instances stored
        "ops_per_instance": ops.per(stored),
    }
    if failed:
        result["failed_requests"] = len(failed)
        result["failed_instances"] = count - stored
        result["failed_first"] = f"{failed[0][0]} {failed[0][2]}"
    return result


def timed_gets(
    client: httpx.Client, url: str | httpx.URL, headers: dict[str, str], repeat: int, ops: Ops
) -> tuple[list[float], int]:
    """``repeat`` timed GETs after one warm-up (ms each, ops summed into ``ops``), and the JSON array length."""
    samples: list[float] = []
    length = 0
    for n in range(repeat + 1):
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        took = (time.perf_counter() - start) * 1000
        if response.status_code not in (200, 204):
            raise RuntimeError(f"GET {url} answered {response.status_code}: {response.text[:300]}")
        if n == 0:
            length = len(response.json()) if response.status_code == 200 else 0
            continue
        samples.append(took)
        ops.add(response)
    return samples, length


def latencies(client: httpx.Client, url: str | httpx.URL, headers: dict[str, str], repeat: int) -> dict[str, Any]:
    """p50/p95 of ``repeat`` GETs after one warm-up, ops per request, and the JSON array length."""
    ops = Ops()
    samples, length = timed_gets(client, url, headers, repeat, ops)
    return {**percentiles(samples), "results": length, "ops_per_request": ops.per(repeat)}


def metadata(client: httpx.Client, base: str, long_series: Study, study: Study, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    head = long_series[0]
    for key, url, expected in (
        ("study_metadata_100", f"{base}/studies/{study[0].study}/metadata", len(study)),
        ("study_metadata_500", f"{base}/studies/{head.study}/metadata", len(long_series)),
        ("series_metadata_500", f"{base}/studies/{head.study}/series/{head.series}/metadata", len(long_series)),
    ):
        out[key] = {**latencies(client, url, DICOM_JSON, repeat), "instances": expected}
        if out[key]["results"] != expected:
            log(f"  warning: {key} returned {out[key]['results']} instances, expected {expected}")
    return out


def query_mix(studies: Sequence[Study]) -> list[tuple[str, str, dict[str, str]]]:
    """The fixed QIDO mix: (key, path, parameters)."""
    a = studies[0][0]
    return [
        ("studies_by_patient_id", "/studies", {"PatientID": a.patient_id}),
        ("studies_by_date_range", "/studies", {"StudyDate": "20180101-20191231"}),
        ("series_of_study", f"/studies/{a.study}/series", {}),
        ("instances_of_study", f"/studies/{a.study}/instances", {"limit": "100"}),
    ]


def qido(client: httpx.Client, base: str, studies: Sequence[Study], repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    everything: list[float] = []
    ops = Ops()
    for key, path, params in query_mix(studies):
        samples, length = timed_gets(client, httpx.URL(base + path, params=params), DICOM_JSON, repeat, ops)
        if not length:
            log(f"  warning: QIDO {path} {params} matched nothing")
        out[key] = {**percentiles(samples), "results": length}
        everything += samples
    return {"mix": percentiles(everything), **out, "ops_per_request": ops.per(len(everything))}


#: QIDO on an undeclared attribute beside the same-shaped query on a core one:
#: key, label, path, the study's attribute it matches (ProtocolName: no core key, one value per study).
ANY_ATTRIBUTE = (
    ("instances_by_protocol", "instances?ProtocolName (undeclared)", "/instances", "ProtocolName"),
    ("instances_by_accession", "instances?AccessionNumber (core)", "/instances", "AccessionNumber"),
    ("studies_by_protocol", "studies?ProtocolName (undeclared)", "/studies", "ProtocolName"),
    ("studies_by_accession", "studies?AccessionNumber (core)", "/studies", "AccessionNumber"),
)


def any_attribute(client: httpx.Client, base: str, study: Study, repeat: int) -> dict[str, Any]:
    """p50/p95 and round trips of :data:`ANY_ATTRIBUTE` for ``study``; a refused query is recorded, not raised."""
    head = study[0]
    values = {"ProtocolName": head.protocol, "AccessionNumber": head.accession}
    out: dict[str, Any] = {}
    for key, _, path, keyword in ANY_ATTRIBUTE:
        expected = len(study) if path == "/instances" else 1
        url = httpx.URL(base + path, params={keyword: values[keyword]})
        try:
            out[key] = {**latencies(client, url, DICOM_JSON, repeat), "expected": expected}
        except (RuntimeError, httpx.HTTPError) as exc:
            log(f"  note: {path}?{keyword}=... not measured: {str(exc)[:200]}")
            out[key] = {"error": str(exc)[:300]}
            continue
        if not out[key]["results"]:  # the key is ignored or unsupported: timing it would compare nothing
            log(f"  note: {path}?{keyword} matched nothing (expected {expected}): reported as n/a")
            out[key]["error"] = "matched nothing"
        elif out[key]["results"] != expected:
            log(f"  warning: {path}?{keyword} returned {out[key]['results']} results, expected {expected}")
    return out


#: The same queries once ProtocolName is declared as a Study-level extended query tag (ours only).
EXTENDED_TAG = (
    ("instances_by_protocol_tag", "instances?ProtocolName (extended tag)", "/instances", "ProtocolName"),
    ("studies_by_protocol_tag", "studies?ProtocolName (extended tag)", "/studies", "ProtocolName"),
)


def extended_tag(client: httpx.Client, base: str, env: dict[str, str], study: Study, repeat: int) -> dict[str, Any]:
    """Declare ProtocolName as an extended query tag, reindex every stored instance, then time :data:`EXTENDED_TAG`.

    The bench host runs no queue triggers, so the reindex's steps run here (``operations.run_step``, as
    the trigger would); the queries wait until the host's cached tag list has expired.
    """
    from dicomserver import operations
    from dicomserver.settings import Settings
    from dicomserver.stores.model import EXTENDED_TAGS_MAX_AGE_SECONDS
    from dicomserver.wiring import build_services

    services = build_services(Settings.from_env(env))
    added = client.post(base + "/extendedquerytags", json=[{"path": "ProtocolName", "level": "Study"}])
    if added.status_code != 202:
        raise RuntimeError(f"POST /extendedquerytags answered {added.status_code}: {added.text[:200]}")
    operation_id = added.json()["id"]
    start, steps = time.perf_counter(), 0
    while True:
        saved = operations.run_step(services.operations, operation_id, services)
        steps += 1
        if saved is None or saved.status.done:
            break
    out: dict[str, Any] = {"reindex": {"seconds": time.perf_counter() - start, "steps": steps}}
    time.sleep(EXTENDED_TAGS_MAX_AGE_SECONDS + 1)
    value = study[0].protocol
    for key, _, path, keyword in EXTENDED_TAG:
        expected = len(study) if path == "/instances" else 1
        url = httpx.URL(base + path, params={keyword: value})
        out[key] = {**latencies(client, url, DICOM_JSON, repeat), "expected": expected}
        if out[key]["results"] != expected:
            found = out[key]["results"]
            log(f"  warning: {path}?{keyword} (extended tag) returned {found} results, expected {expected}")
    return out


def wado(client: httpx.Client, base: str, instances: Sequence[Instance], concurrency: int) -> dict[str, Any]:
    ops = Ops()
    received = [0]
    lock = threading.Lock()

    def get(i: Instance) -> None:
        url = f"{base}/studies/{i.study}/series/{i.series}/instances/{i.sop}"
        response = client.get(url, headers=WHOLE_INSTANCE)
        if response.status_code != 200 or len(response.content) < len(i.data):
            raise RuntimeError(f"WADO {url} answered {response.status_code} with {len(response.content)} bytes")
        ops.add(response)
        with lock:
            received[0] += len(response.content)

    start = time.perf_counter()
    concurrently(get, instances, concurrency)
    elapsed = time.perf_counter() - start
    return {
        "instances": len(instances),
        "seconds": round(elapsed, 3),
        "instances_per_s": len(instances) / elapsed,
        "mb_per_s": received[0] / elapsed / 1e6,
        "ops_per_instance": ops.per(len(instances)),
    }


def _cosmos_client(env: dict[str, str]) -> Any:
    from azure.cosmos import CosmosClient

    return CosmosClient(
        env["DICOM_COSMOS_ENDPOINT"],
        credential=env["DICOM_COSMOS_KEY"],
        enable_endpoint_discovery=False,
        connection_verify=False,
    )


def _database_name(env: dict[str, str]) -> str:
    try:
        from dicomserver.settings import Settings

        return Settings.from_env(env).cosmos_database
    except (ImportError, AttributeError, ValueError):
        return env.get("DICOM_COSMOS_DATABASE", "dicom")


def storage_floor(env: dict[str, str], payloads: Sequence[bytes], concurrency: int) -> dict[str, Any]:
    """Per instance, one raw Azurite blob put of its bytes, then one Cosmos create_item of ~5 KB."""
    from azure.cosmos import PartitionKey
    from azure.storage.blob import BlobServiceClient

    blobs = BlobServiceClient.from_connection_string(env["DICOM_STORAGE"]).get_container_client("bench-floor")
    if not blobs.exists():
        blobs.create_container()
    database = _cosmos_client(env).create_database_if_not_exists(_database_name(env))
    docs = database.create_container_if_not_exists("bench-floor", partition_key=PartitionKey("/pk"))
    # ~5 KB: about what an instance's index document with its attributes weighs.
    attrs = {f"0019{n:04X}": {"vr": "LO", "Value": [f"{n:03d}" + "x" * 60]} for n in range(60)}
    run = f"c{concurrency}-{secrets.token_hex(3)}"

    def one(n: int) -> None:
        name = f"{run}-{n}"
        blobs.upload_blob(f"{name}.dcm", payloads[n % len(payloads)], overwrite=True)
        docs.create_item({"id": name, "pk": f"{run}|{n // 100}", "type": "instance", "attrs": attrs})

    for n in range(-4, 0):  # warm-up: connections, first-call setup
        one(n)
    count = len(payloads)
    start = time.perf_counter()
    concurrently(one, range(count), concurrency)
    elapsed = time.perf_counter() - start
    return {"instances": count, "seconds": round(elapsed, 3), "instances_per_s": count / elapsed}


def cosmos_study_query(env: dict[str, str], patient_id: str, repeat: int) -> dict[str, Any]:
    """The Cosmos stand-in's own time for the QIDO study query by PatientID, raw with the SDK."""
    try:
        from dicomserver.stores.azure.index import STUDIES_CONTAINER as container_name
    except ImportError:  # the studies container has not landed yet
        container_name = "studies"
    try:
        from dicomserver.matching import fold_text

        value = fold_text(patient_id)
    except ImportError:
        value = patient_id.strip(" \x00").upper()
    from azure.cosmos.exceptions import CosmosResourceNotFoundError

    container = _cosmos_client(env).get_database_client(_database_name(env)).get_container_client(container_name)
    sql = "SELECT * FROM c WHERE c.partition = @partition AND c.q.PatientID = @p"
    params: list[dict[str, Any]] = [
        {"name": "@partition", "value": "Microsoft.Default"},
        {"name": "@p", "value": value},
    ]

    def call() -> int:
        return len(list(container.query_items(sql, parameters=params, enable_cross_partition_query=True)))

    try:
        found = call()
    except CosmosResourceNotFoundError:
        log(f"  note: no Cosmos container {container_name!r} yet: the raw study query is skipped")
        return {"container": container_name, "skipped": "container not found"}
    if not found:
        log(f"  warning: the raw study query matched no document in {container_name!r}")
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return {"container": container_name, "results": found, **percentiles(samples)}


#: Properties Cosmos adds to every document (not the service's bytes).
COSMOS_SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts")


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def index_size(env: dict[str, str], sample: int) -> dict[str, Any]:
    """Bytes of the any-attribute ``x`` map in ``sample`` instance documents, read raw with the SDK.

    Each document's size is its compact UTF-8 JSON without the Cosmos system properties; ``x`` bytes
    are that size minus the size of the same document without ``x`` (so the key and comma count).
    """
    try:
        from dicomserver.stores.azure.index import INSTANCES_CONTAINER as container_name
    except ImportError:
        container_name = "instances"
    try:
        from dicomserver.matching import any_attribute_values
    except ImportError:
        any_attribute_values = None  # type: ignore[assignment]
    container = _cosmos_client(env).get_database_client(_database_name(env)).get_container_client(container_name)
    docs = list(
        container.query_items(
            "SELECT TOP @n * FROM c",
            parameters=[{"name": "@n", "value": sample}],
            enable_cross_partition_query=True,
        )
    )
    if not docs:
        raise RuntimeError(f"no document in the Cosmos container {container_name!r}")
    full, bare, keys, values, attrs, metadata = [], [], [], [], [], []
    build_us: list[float] = []
    for doc in docs:
        doc = {k: v for k, v in doc.items() if k not in COSMOS_SYSTEM}
        x = doc.get("x") or {}
        full.append(_json_bytes(doc))
        bare.append(_json_bytes({k: v for k, v in doc.items() if k != "x"}))
        keys.append(len(x))
        values.append(sum(len(v) if isinstance(v, list) else 1 for v in x.values()))
        attrs.append(_json_bytes(doc.get("attrs")) if "attrs" in doc else 0)
        metadata.append(_json_bytes(doc["metadata"]) if "metadata" in doc else 0)
        dataset = doc.get("metadata")
        if isinstance(dataset, str):
            try:
                dataset = json.loads(dataset)
            except ValueError:
                dataset = None
        if any_attribute_values is not None and isinstance(dataset, dict):
            start = time.perf_counter()
            any_attribute_values(dataset)
            build_us.append((time.perf_counter() - start) * 1e6)
    mean = statistics.fmean
    with_x = sum(1 for k in keys if k)
    doc_bytes, doc_bytes_bare = mean(full), mean(bare)
    return {
        "container": container_name,
        "documents": len(docs),
        "with_x": with_x,
        "setting": env.get("DICOM_SEARCH_ANY_ATTRIBUTE", "(unset: on)"),
        "doc_bytes": doc_bytes,
        "doc_bytes_without_x": doc_bytes_bare,
        "x_bytes": doc_bytes - doc_bytes_bare,
        "x_share": (doc_bytes - doc_bytes_bare) / doc_bytes if doc_bytes else None,
        "x_increase": (doc_bytes - doc_bytes_bare) / doc_bytes_bare if doc_bytes_bare else None,
        "x_tags": mean(keys),
        "x_values": mean(values),
        "attrs_bytes": mean(attrs),
        "metadata_bytes": mean(metadata),
        "x_build_us": statistics.median(build_us) if build_us else None,
    }


class FeedLog:
    """The log documents the service writes into the change feed's container, counted between marks.

    Read raw with the SDK (these calls are not the service's, so no response header counts them):
    :meth:`take` returns what was logged since the previous mark.  Each log document is one batch
    (the instances of one study logged together), written with 2 index round trips: the patch of
    the feed's counter document and the create of the log document; the first batch ever also
    creates the counter (its patch answers 404 first: one round trip more).
    """

    def __init__(self, env: dict[str, str]) -> None:
        try:
            from dicomserver.stores.azure.changefeed import CHANGEFEED_CONTAINER as name
            from dicomserver.stores.azure.changefeed import COUNTER_ID as counter
        except ImportError:
            name, counter = "changefeed", "sequence"
        try:  # the one logical partition of the whole log (since the feed spans data partitions)
            from dicomserver.stores.azure.changefeed import FEED_PK as partition
        except ImportError:
            partition = "Microsoft.Default"
        self.name, self._counter, self.partition = name, counter, partition
        self._container = _cosmos_client(env).get_database_client(_database_name(env)).get_container_client(name)
        self._after = max((int(d["last"]) for d in self._docs(0)), default=0)
        self._had_counter = self._counter_exists()

    def _docs(self, after: int) -> list[dict[str, Any]]:
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        sql = "SELECT * FROM c WHERE c.pk = @pk AND IS_DEFINED(c.seq) AND c.seq > @after"
        params: list[dict[str, Any]] = [{"name": "@pk", "value": self.partition}, {"name": "@after", "value": after}]
        try:
            return list(self._container.query_items(sql, parameters=params, partition_key=self.partition))
        except CosmosResourceNotFoundError:
            return []

    def _counter_exists(self) -> bool:
        """A query, not ``read_item``: the Cosmos stand-in answers 500, not 404, for a missing document."""
        from azure.cosmos.exceptions import CosmosResourceNotFoundError

        params: list[dict[str, Any]] = [
            {"name": "@pk", "value": self.partition},
            {"name": "@id", "value": self._counter},
        ]
        try:
            rows = self._container.query_items(
                "SELECT c.id FROM c WHERE c.pk = @pk AND c.id = @id", parameters=params, partition_key=self.partition
            )
            return bool(list(rows))
        except CosmosResourceNotFoundError:
            return False

    def take(self) -> dict[str, Any]:
        """What was logged since the last mark: documents, entries, studies, bytes, index round trips."""
        docs = self._docs(self._after)
        if docs:
            self._after = max(int(d["last"]) for d in docs)
        created_counter = bool(docs) and not self._had_counter and self._counter_exists()
        self._had_counter = self._had_counter or created_counter
        return {
            "log_documents": len(docs),
            "entries": sum(int(d["last"]) - int(d["seq"]) + 1 for d in docs),
            "studies": len({d.get("study") for d in docs}),
            # the documents as the service wrote them (the stand-in's _rid, _ts, ... left out)
            "document_bytes": sum(
                len(json.dumps({k: v for k, v in d.items() if not k.startswith("_")}, separators=(",", ":")))
                for d in docs
            ),
            "counter_created": created_counter,
            "index_ops": 2 * len(docs) + int(created_counter),
        }


def change_feed_share(stowed: dict[str, Any], logged: dict[str, Any]) -> dict[str, Any]:
    """The change feed's part of one STOW run's index round trips and request charge, per instance stored."""
    stored = stowed["instances"] - stowed.get("failed_instances", 0)
    ops = stowed.get("ops_per_instance") or {}
    out: dict[str, Any] = {**logged, "instances_stored": stored}
    if not stored:
        return out
    index, ru = ops.get("index"), ops.get("ru")
    feed_index = logged["index_ops"] / stored
    out["index_per_instance"] = index
    out["ru_per_instance"] = ru
    out["feed_index_per_instance"] = feed_index
    out["feed_bytes_per_instance"] = logged["document_bytes"] / stored
    if index:
        out["feed_share_of_index"] = feed_index / index
        # the charge of an index round trip of this run, on average (the stand-in: a flat 1 RU each)
        out["feed_ru_per_instance"] = feed_index * (ru or 0.0) / index
    if logged["entries"] != stored:
        log(f"  warning: {logged['entries']} change feed entries logged for {stored} instances stored")
    return out


def feed_reads(client: httpx.Client, base: str, repeat: int, change_feed: bool) -> dict[str, Any]:
    """100 instances by QIDO (``/instances?limit=100``) and, when ``change_feed``, 100 change feed entries.

    The change feed is read from the middle of the feed (``offset`` = half of its latest sequence
    number, less 50), with metadata and without.
    """
    out: dict[str, Any] = {}
    url = httpx.URL(base + "/instances", params={"limit": "100"})
    out["qido_instances_100"] = latencies(client, url, DICOM_JSON, repeat)
    if not change_feed:
        return out
    latest = client.get(f"{base}/changefeed/latest", params={"includemetadata": "false"}, headers=FEED_JSON)
    if latest.status_code != 200:
        raise RuntimeError(f"GET /changefeed/latest answered {latest.status_code}: {latest.text[:300]}")
    last = int(latest.json()["Sequence"])
    offset = max(0, last // 2 - 50)
    for key, metadata in (("changefeed_100", "true"), ("changefeed_100_nometa", "false")):
        params = {"offset": str(offset), "limit": "100", "includemetadata": metadata}
        url = httpx.URL(base + "/changefeed", params=params)
        out[key] = {**latencies(client, url, FEED_JSON, repeat), "offset": offset, "latest_sequence": last}
        entries = client.get(url, headers=FEED_JSON).json()
        sequences = [int(e["Sequence"]) for e in entries]
        out[key]["with_metadata"] = sum(1 for e in entries if e.get("Metadata"))
        if len(entries) != 100 or sequences != list(range(offset + 1, offset + 101)):
            first = sequences[:1] or None
            log(f"  warning: {key} at offset {offset}: {len(entries)} entries, first sequence {first}")
    return out


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Data:
    """The instances of one run, shared by every server."""

    stow: dict[str, list[Study]]
    long_series: Study
    load: list[Study]
    floor: list[bytes]

    @property
    def stow_total(self) -> int:
        return sum(len(s) for studies in self.stow.values() for s in studies)


def make_data(scale: argparse.Namespace) -> Data:
    gen = Generator(run=secrets.token_hex(3))
    stow_sets = {key: gen.studies(n) for (key, *_), n in zip(STOW_MODES, scale.stow_instances, strict=True)}
    long_series = gen.long_series(scale.long_series)
    stored = sum(len(s) for studies in stow_sets.values() for s in studies) + len(long_series)
    load = gen.studies(max(0, scale.instances - stored))
    floor = [i.data for i in flatten(stow_sets["stow_1_c4"])]
    floor = (floor * (scale.floor_instances // max(1, len(floor)) + 1))[: scale.floor_instances]
    return Data(stow_sets, long_series, load, floor)


def measure(name: str, base: str, env: dict[str, str] | None, data: Data, scale: argparse.Namespace) -> dict[str, Any]:
    """Every measure against one server; ``env`` (our app settings) adds the floor and the raw query."""
    out: dict[str, Any] = {}
    errors: dict[str, str] = {}

    def step(key: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """Run one measure into ``out[key]``; an error is recorded and the run goes on."""
        try:
            out[key] = fn()
        except (RuntimeError, httpx.HTTPError) as exc:
            log(f"  error: [{name}] {key}: {exc}")
            errors[key] = str(exc)[:500]
            return None
        return out[key]

    feed: FeedLog | None = None

    def stow_step(key: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """A STOW measure; on our service also what it logged to the change feed (``out[key]["changefeed"]``)."""
        r = step(key, fn)
        if feed is not None:
            try:
                logged = feed.take()
            except Exception as exc:  # noqa: BLE001 - the count is a side measure: the run goes on
                log(f"  error: [{name}] {key}: counting the change feed documents: {exc}")
                errors[f"{key}_changefeed"] = str(exc)[:500]
            else:
                if r:
                    r["changefeed"] = change_feed_share(r, logged)
        return r

    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    with httpx.Client(timeout=600, limits=limits) as client:
        if env is not None:
            for concurrency in (1, 4):
                r = step(f"floor_c{concurrency}", lambda c=concurrency: storage_floor(env, data.floor, c))
                if r:
                    log(f"[floor] blob put + Cosmos create_item c={concurrency}: {r['instances_per_s']:.1f}/s")
            try:
                feed = FeedLog(env)
            except Exception as exc:  # noqa: BLE001 - the count is a side measure: the run goes on
                log(f"  error: [{name}] the change feed's container cannot be read: {exc}")
                errors["changefeed"] = str(exc)[:500]
        for key, label, concurrency, per_request, _ in STOW_MODES:
            r = stow_step(key, lambda k=key, c=concurrency, n=per_request: stow(client, base, data.stow[k], c, n))
            if r:
                log(f"[{name}] {label}: {r['instances']} in {r['seconds']:.1f} s = {r['instances_per_s']:.1f}/s")
        log(f"[{name}] loading the {len(data.long_series)}-instance series (STOW 20/request c=4) ...")
        stow_step(
            "load_long_series", lambda: stow(client, base, [data.long_series], 4, 20, label=f"[{name}] long series")
        )
        stored = data.stow_total + len(data.long_series)
        log(f"[{name}] study and series metadata ({stored:,} instances stored) ...")
        sample = data.stow["stow_20_c4"][0]
        if step("metadata", lambda: metadata(client, base, data.long_series, sample, scale.repeat)):
            out["metadata"]["stored_instances"] = stored
        stored_sets = [*(s for studies in data.stow.values() for s in studies), data.long_series]
        instances = list(flatten(stored_sets))[: scale.wado_instances]
        r = step("wado_c4", lambda: wado(client, base, instances, 4))
        if r:
            log(f"[{name}] WADO instance c=4: {r['instances']} in {r['seconds']:.1f} s = {r['instances_per_s']:.1f}/s")
        if data.load:
            loading = sum(len(s) for s in data.load)
            log(f"[{name}] loading {loading:,} more instances for QIDO (STOW 20/request c=4) ...")
            stow_step("load_qido", lambda: stow(client, base, data.load, 4, 20, label=f"[{name}] load"))
            stored += loading
        log(f"[{name}] QIDO mix at {stored:,} instances ...")
        queried = data.stow["stow_20_c4"]
        if step("qido", lambda: qido(client, base, queried, scale.repeat)):
            out["qido"]["stored_instances"] = stored
        log(f"[{name}] QIDO on an undeclared attribute (ProtocolName) beside a core one at {stored:,} instances ...")
        if step("any_attribute", lambda: any_attribute(client, base, queried[0], scale.repeat)):
            out["any_attribute"]["stored_instances"] = stored
        if env is not None:
            log(f"[{name}] ProtocolName declared as an extended query tag: reindex of {stored:,} instances, QIDO ...")
            r = step("extended_tag", lambda: extended_tag(client, base, env, queried[0], scale.repeat))
            if r:
                log(f"[{name}] reindex: {r['reindex']['steps']} steps in {r['reindex']['seconds']:.1f} s")
        what = "change feed and QIDO" if env is not None else "QIDO"
        log(f"[{name}] 100 instances by {what} at {stored:,} instances ...")
        if step("reads_100", lambda: feed_reads(client, base, scale.repeat, change_feed=env is not None)):
            out["reads_100"]["stored_instances"] = stored
        if env is not None:
            step("cosmos_study_query", lambda: cosmos_study_query(env, queried[0][0].patient_id, scale.repeat))
            log(f"[{name}] index size: the x map in a sample of {scale.size_sample} instance documents ...")
            r = step("index_size", lambda: index_size(env, scale.size_sample))
            if r:
                r["stored_instances"] = stored
    if errors:
        out["errors"] = errors
    return out


def run(scale: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    data = make_data(scale)
    total = data.stow_total + len(data.long_series) + sum(len(s) for s in data.load)
    log(
        f"dataset: {total:,} CT instances of {len(data.long_series[0].data) / 1000:.0f} KB "
        f"({'/'.join(map(str, scale.stow_instances))} for the STOW modes, a {len(data.long_series)}-instance series, "
        f"QIDO at {total:,}); made in {time.perf_counter() - start:.0f} s"
    )
    results: dict[str, Any] = {"ours": {}, "orthanc": {}, "floor": {}}
    with tempfile.TemporaryDirectory(prefix="dicom-bench-") as tmp:
        work = Path(tmp)
        with our_service(work / "ours") as (base, env):
            ours = measure("ours", base, env, data, scale)
        for key in ("floor_c1", "floor_c4", "cosmos_study_query"):
            if key in ours:
                results["floor"][key] = ours.pop(key)
        results["ours"] = ours
        if scale.peer == "orthanc":
            with orthanc(work / "orthanc") as base:
                results["orthanc"] = measure("orthanc", base, None, data, scale)
    results["seconds"] = round(time.perf_counter() - start, 1)
    return results


# -- the table ----------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    ours, peer, floor = results["ours"], results.get("orthanc") or {}, results["floor"]
    rows: list[tuple[str, str, float | None, float | str | None, float | None]] = []

    def get(d: dict[str, Any], *path: str) -> Any:
        for p in path:
            if not isinstance(d, dict) or p not in d:
                return None
            d = d[p]
        return d

    def row(label: str, unit: str, *path: str, floor_value: float | None = None, peer_na: bool = False) -> None:
        """One measure; ``peer_na``: Orthanc has no such thing (its column says n/a)."""
        rows.append((label, unit, get(ours, *path), "n/a" if peer_na else get(peer, *path), floor_value))

    for key, label, _, _, floor_key in STOW_MODES:
        row(label, "inst/s", key, "instances_per_s", floor_value=get(floor, floor_key, "instances_per_s"))
    stored = get(ours, "metadata", "stored_instances")
    for key, label in METADATA:
        size = get(ours, "metadata", key, "instances") or key.rsplit("_", 1)[1]
        for p in ("p50_ms", "p95_ms"):
            row(f"{label}, {size} instances {p[:3]}", "ms", "metadata", key, p)
    row("WADO instance c=4", "inst/s", "wado_c4", "instances_per_s")
    stored_q = get(ours, "qido", "stored_instances") or 0
    for p in ("p50_ms", "p95_ms"):
        row(f"QIDO mix @{stored_q:,} {p[:3]}", "ms", "qido", "mix", p)
    for key, label in (
        ("studies_by_patient_id", "studies?PatientID"),
        ("studies_by_date_range", "studies?StudyDate=range"),
        ("series_of_study", "studies/{s}/series"),
        ("instances_of_study", "studies/{s}/instances?limit=100"),
    ):
        for p in ("p50_ms", "p95_ms") if key == "studies_by_patient_id" else ("p50_ms",):
            raw = get(floor, "cosmos_study_query", p) if key == "studies_by_patient_id" else None
            row(f"  {label} {p[:3]}", "ms", "qido", key, p, floor_value=raw)
    stored_a = get(ours, "any_attribute", "stored_instances") or 0
    for key, label, *_ in ANY_ATTRIBUTE:
        refused = bool(get(peer, "any_attribute", key, "error"))
        for p in ("p50_ms", "p95_ms"):
            row(f"{label} {p[:3]}", "ms", "any_attribute", key, p, peer_na=refused)
        if get(ours, "any_attribute", key, "error"):  # ours matched nothing: its timing compares nothing
            rows[-2:] = [(r[0], r[1], None, r[3], r[4]) for r in rows[-2:]]
    for key, label, *_ in EXTENDED_TAG:
        for p in ("p50_ms", "p95_ms"):
            row(f"{label} {p[:3]}", "ms", "extended_tag", key, p, peer_na=True)
    row("(reindex of ProtocolName, all instances)", "s", "extended_tag", "reindex", "seconds", peer_na=True)
    stored_r = get(ours, "reads_100", "stored_instances") or 0
    offset = get(ours, "reads_100", "changefeed_100", "offset")
    at = "" if offset is None else f" offset={offset:,}"
    for key, label in (
        ("qido_instances_100", "instances?limit=100 (QIDO)"),
        ("changefeed_100", f"changefeed?limit=100{at}"),
        ("changefeed_100_nometa", "  ... &includemetadata=false"),
    ):
        for p in ("p50_ms", "p95_ms"):
            row(f"{label} {p[:3]}", "ms", "reads_100", key, p, peer_na=key != "qido_instances_100")
    row("(load: STOW 20/request c=4)", "inst/s", "load_qido", "instances_per_s")

    def fmt(v: float | str | None) -> str:
        if isinstance(v, str):
            return v
        return "-" if v is None else f"{v:,.1f}" if abs(v) >= 100 else f"{v:,.2f}"

    def ratio(a: float | None, b: float | str | None) -> str:
        return "-" if a is None or not b or isinstance(b, str) else f"{a / b:.2f}"

    width = 44
    header = (
        f"{'measure':{width}} {'unit':>6} {'ours':>10} {'orthanc':>10} {'floor':>10} {'ours/orthanc':>13} "
        f"{'ours/floor':>11}"
    )
    lines = [header, "-" * len(header)]
    for label, unit, a, b, f in rows:
        lines.append(
            f"{label:{width}} {unit:>6} {fmt(a):>10} {fmt(b):>10} {fmt(f):>10} {ratio(a, b):>13} {ratio(a, f):>11}"
        )
    lines += ["", f"{'storage operations (ours, ' + OPS_HEADER + ')':{width}} {'unit':>6}"
              + "".join(f" {k:>10}" for k in OPS_KINDS)]  # fmt: skip
    lines.append("-" * len(header))
    op_rows: list[tuple[str, str, tuple[str, ...]]] = [
        (label, "/inst", (key, "ops_per_instance")) for key, label, *_ in STOW_MODES
    ]
    op_rows += [
        (f"{label}, {get(ours, 'metadata', key, 'instances') or key.rsplit('_', 1)[1]} instances", "/req",
         ("metadata", key, "ops_per_request"))
        for key, label in METADATA
    ]  # fmt: skip
    op_rows += [
        ("WADO instance c=4", "/inst", ("wado_c4", "ops_per_instance")),
        ("QIDO mix", "/req", ("qido", "ops_per_request")),
        *((label, "/req", ("any_attribute", key, "ops_per_request")) for key, label, *_ in ANY_ATTRIBUTE),
        *((label, "/req", ("extended_tag", key, "ops_per_request")) for key, label, *_ in EXTENDED_TAG),
        ("instances?limit=100 (QIDO)", "/req", ("reads_100", "qido_instances_100", "ops_per_request")),
        ("changefeed?limit=100", "/req", ("reads_100", "changefeed_100", "ops_per_request")),
        ("  ... &includemetadata=false", "/req", ("reads_100", "changefeed_100_nometa", "ops_per_request")),
    ]
    for label, unit, path in op_rows:
        ops = get(ours, *path)
        cells = "".join(f" {'-' if ops is None else fmt(ops.get(k, 0.0)):>10}" for k in OPS_KINDS)
        lines.append(f"{label:{width}} {unit:>6}{cells}")
    lines += ["", *feed_table(ours, width, len(header))]
    lines += ["", *size_table(ours, width, len(header))]
    lines += [
        "",
        "inst/s: higher is better; ms: lower is better (ratios are ours divided by the other column).",
        "floor for STOW: per instance one raw Azurite blob put of its bytes then one Cosmos create_item of",
        "~5 KB, at the same concurrency (c=1 for the c=1 mode, c=4 for the c=4 modes); for QIDO studies?PatientID:",
        "the same study query sent raw to the Cosmos stand-in.",
        f"Metadata measured with {stored or 0:,} instances stored, QIDO with {stored_q:,}, the reads of 100 with "
        f"{stored_r:,};",
        f"'-': not measured or no {OPS_HEADER} header; n/a: Orthanc has no change feed,",
        "or its QIDO refused the key or matched nothing with it.",
        f"ProtocolName / AccessionNumber at {stored_a:,} instances: one study's value (100 instances, 1 study);",
        "ProtocolName is no core key (matched in the x map of the instance documents), AccessionNumber is;",
        "(extended tag): the same queries once ProtocolName is declared (Study level) and reindexed.",
        "changefeed?limit=100 reads the middle of the feed (offset = half its latest sequence number - 50) as a",
        "consumer paging through it does; instances?limit=100 is the QIDO of 100 instances of any study.",
    ]
    for name in ("ours", "orthanc"):
        side = results.get(name) or {}
        for key, value in side.items():
            if isinstance(value, dict) and value.get("failed_requests"):
                lines.append(
                    f"{name} {key}: {value['failed_requests']} failed requests ({value['failed_instances']} "
                    f"instances, not counted as stored); the first: {value['failed_first'][:100]!r}"
                )
        for key, message in (side.get("errors") or {}).items():
            lines.append(f"{name} {key}: not measured: {message[:160]}")
    return "\n".join(lines)


def feed_table(ours: dict[str, Any], width: int, rule: int) -> list[str]:
    """The change feed's share of each STOW run's storage cost (ours only)."""
    runs = [(key, label) for key, label, *_ in STOW_MODES]
    runs += [("load_long_series", "(long series: STOW 20/request c=4)"), ("load_qido", "(load: STOW 20/request c=4)")]
    columns = ("docs", "index", "feed", "share", "ru", "feed ru", "bytes")
    title = "change feed share of STOW (ours; orthanc: n/a)"
    lines = [f"{title:{width}} {'unit':>6}" + "".join(f" {c:>8}" for c in columns), "-" * rule]
    shown = 0
    for key, label in runs:
        feed = (ours.get(key) or {}).get("changefeed")
        if not feed:
            continue
        shown += 1
        share = feed.get("feed_share_of_index")
        cells = [
            f"{feed['log_documents']:,}",
            *(
                "-" if feed.get(k) is None else f"{feed[k]:.2f}"
                for k in ("index_per_instance", "feed_index_per_instance")
            ),
            "-" if share is None else f"{share:.0%}",
            *("-" if feed.get(k) is None else f"{feed[k]:.2f}" for k in ("ru_per_instance", "feed_ru_per_instance")),
            "-" if feed.get("feed_bytes_per_instance") is None else f"{feed['feed_bytes_per_instance']:.0f}",
        ]
        lines.append(f"{label:{width}} {'/inst':>6}" + "".join(f" {c:>8}" for c in cells))
    if not shown:
        return lines + ["(not measured)"]
    return lines + [
        "docs: log documents the run created in the changefeed container (one per request and study), counted",
        "with the SDK before and after the run; feed = 2 index round trips per document (counter patch + document",
        "create, see dicomserver/stores/azure/changefeed.py; +1 when the run created the counter), per instance",
        "stored; index and ru: the whole STOW's, from the x-dicom-storage-ops header; share = feed / index;",
        "feed ru = feed x the run's ru per index round trip (the Cosmos stand-in charges a flat 1 RU per call, so",
        "locally ru counts calls: in Azure a write costs by its size and indexed paths); bytes: log document",
        "bytes per instance. The bench runs the host without triggers, so no repair or publish writes are counted.",
    ]


def size_table(ours: dict[str, Any], width: int, rule: int) -> list[str]:
    """Index size and STOW cost of the any-attribute ``x`` map (ours only)."""
    size = ours.get("index_size")
    title = "any-attribute search: index and STOW cost (ours)"
    lines = [f"{title:{width}} {'unit':>6} {'value':>10}", "-" * rule]
    if not size:
        return lines + ["(not measured)"]

    def add(label: str, unit: str, value: float | None, spec: str = ",.0f") -> None:
        lines.append(f"{label:{width}} {unit:>6} {'-' if value is None else format(value, spec):>10}")

    stowed = [(ours.get(key) or {}).get("ops_per_instance") for key, *_ in STOW_MODES]
    add("x map", "B/inst", size["x_bytes"])
    add("x map share of the instance document", "%", 100 * (size["x_share"] or 0), ".1f")
    add("x map tags / values indexed", "/inst", size["x_tags"], ".1f")
    lines[-1] += f" / {size['x_values']:.1f}"
    add("instance document with x (STOW write)", "B/inst", size["doc_bytes"])
    add("instance document without x", "B/inst", size["doc_bytes_without_x"])
    add("  increase", "%", 100 * (size["x_increase"] or 0), ".1f")
    add("  of which attrs / inline metadata", "B/inst", size["attrs_bytes"])
    lines[-1] += f" / {size['metadata_bytes']:,.0f}"
    stored = size.get("stored_instances") or 0
    add(f"x maps at {stored:,} instances", "MB", size["x_bytes"] * stored / 1e6, ".2f")
    for (_, label, *_), ops in zip(STOW_MODES, stowed, strict=True):
        add(f"{label}: index round trips", "/inst", ops.get("index") if ops else None, ".2f")
    add("CPU to build x (median)", "us", size["x_build_us"], ".1f")
    return lines + [
        f"From {size['documents']:,} instance documents read with the SDK after the QIDO load ({size['with_x']:,}",
        f"with an x map; DICOM_SEARCH_ANY_ATTRIBUTE={size['setting']}): sizes are compact UTF-8 json.dumps",
        "lengths without the Cosmos system properties; x = the document minus the same document without x (key",
        "included); values indexed = the x map's leaf values. The x map is written in the instance's own",
        "create_item, so the STOW index round trips above are the same with the setting off; its cost is these",
        "bytes and, in Azure, the RU of indexing its values (/x/* is indexed; the stand-in charges a flat 1 RU",
        "per call). CPU: the service's any_attribute_values on the document's inline metadata, in this process.",
        "No STOW pass with the setting off is run (it needs a second host): the bytes without x are computed.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", choices=["orthanc", "none"], default="orthanc")
    parser.add_argument("--quick", action="store_true", help="a smaller run (flags given explicitly still win)")
    parser.add_argument("--instances", type=int, help="instances stored when QIDO is measured (default 10,000)")
    parser.add_argument(
        "--stow-instances",
        type=int,
        help="instances of each STOW mode (default 800 at 1/request c=1, 1000 at 1/request c=4, 1400 at 20/request)",
    )
    parser.add_argument("--long-series", type=int, help="instances of the long series (default 500)")
    parser.add_argument("--wado-instances", type=int, help="instances retrieved by WADO (default 1000)")
    parser.add_argument("--floor-instances", type=int, help="instances per storage floor mode (default 1000)")
    parser.add_argument("--repeat", type=int, help="calls per metadata and QIDO query (default 20)")
    parser.add_argument(
        "--size-sample", type=int, default=500, help="instance documents read for the index size (default 500)"
    )
    args = parser.parse_args(argv)
    for key, value in SCALES["quick" if args.quick else "default"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if isinstance(args.stow_instances, int):
        args.stow_instances = (args.stow_instances,) * len(STOW_MODES)
    # SIGTERM must unwind the context managers, or the emulators and servers outlive the run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        results = run(args)
    except KeyboardInterrupt:
        log("interrupted: everything started was stopped")
        return 130
    except SystemExit as stop:  # SIGTERM
        log("terminated: everything started was stopped")
        raise stop
    text = table(results)
    print("\n" + text)
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "results": results, "table": text.splitlines()}, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)} ({results['seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
