"""``make bench``: this service beside Orthanc and beside the bare storage floor, in one run.

    python -m bench [--peer orthanc|none] [--instances 3000] [--stow-instances 240]

Starts Azurite and the Cosmos DB stand-in on free ports, the local Functions
host (HTTP only, authentication off), and Orthanc with its DICOMweb plugin
(installed from Debian with apt-get if missing), then measures:

* STOW-RS instances/s and MB/s: one instance per request at concurrency 1 and 4, 20 per request;
* QIDO-RS p50/p95 over a fixed query mix at 1,000 and at ``--instances`` instances;
* WADO-RS instance MB/s, instance metadata latency;
* the floor: raw Azurite blob upload/download of the same bytes, and a bare HTTP round trip.

Prints one table with the ratios (ours / Orthanc, ours / floor) and writes
``bench-results/bench-<time>.json``.  Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.dataset import Instance, generate
from scripts import devstack

ROOT = Path(__file__).resolve().parents[1]
BOUNDARY = "bench-boundary-7f3a"
ORTHANC_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def multipart(parts: Sequence[bytes]) -> tuple[bytes, str]:
    body = b"".join(
        b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
    )
    return (
        body + b"--" + BOUNDARY.encode() + b"--\r\n",
        f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
    )


@contextmanager
def our_service(work: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The emulators and the local host; yields (DICOMweb base URL, app settings)."""
    ports = [devstack.free_port() for _ in range(4)]
    with devstack.local_stack(work / "azurite", ports[0], ports[1], ports[2]) as env:
        env = {**os.environ, **env, "DICOM_AUTH_MODE": "none", "DICOM_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports[3]}"}
        with open(work / "host.log", "wb") as log:
            host = subprocess.Popen(
                [sys.executable, "-m", "scripts.localhost", "--port", str(ports[3]), "--no-triggers"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                devstack.wait_for_port("127.0.0.1", ports[3], 60, host)
                yield f"http://127.0.0.1:{ports[3]}/v2", env
            finally:
                devstack.stop(host)


def ensure_orthanc() -> str:
    orthanc = shutil.which("Orthanc")
    if orthanc and ORTHANC_PLUGIN.exists():
        return orthanc
    print("installing orthanc and orthanc-dicomweb from Debian ...", flush=True)
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
    port = devstack.free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "orthanc-storage"),
        "IndexDirectory": str(work / "orthanc-index"),
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
    with open(work / "orthanc.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            devstack.wait_for_port("127.0.0.1", port, 60, proc)
            yield f"http://127.0.0.1:{port}/dicom-web"
        finally:
            devstack.stop(proc)


def stow(base: str, instances: Sequence[Instance], concurrency: int, per_request: int) -> dict[str, float]:
    batches = [instances[i : i + per_request] for i in range(0, len(instances), per_request)]
    payload = sum(len(i.data) for i in instances)

    def send(batch: Sequence[Instance]) -> int:
        body, ctype = multipart([i.data for i in batch])
        with httpx.Client(timeout=300) as client:
            return client.post(f"{base}/studies", content=body, headers={"Content-Type": ctype}).status_code

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = list(pool.map(send, batches))
    elapsed = time.perf_counter() - start
    bad = [s for s in statuses if s != 200]
    if bad:
        raise RuntimeError(f"STOW to {base} answered {bad[:5]}")
    return {"instances_per_s": len(instances) / elapsed, "mb_per_s": payload / elapsed / 1e6}


def latencies(call: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))],
    }


def query_mix(sample: Sequence[Instance]) -> list[tuple[str, dict[str, str]]]:
    """A fixed mix of QIDO queries that every server here understands."""
    a, b = sample[0], sample[len(sample) // 2]
    family = a.patient_name.split("^")[0]
    return [
        ("/studies", {"PatientID": a.patient_id}),
        ("/studies", {"PatientName": f"{family}*"}),
        ("/studies", {"StudyDate": "20180101-20191231", "limit": "50"}),
        ("/studies", {"AccessionNumber": b.accession}),
        ("/studies", {"ModalitiesInStudy": "MR", "limit": "50"}),
        ("/series", {"Modality": "CT", "PatientID": b.patient_id}),
        (f"/studies/{a.study}/instances", {}),
    ]


def qido(base: str, queries: list[tuple[str, dict[str, str]]], repeat: int) -> dict[str, float]:
    samples: list[float] = []
    with httpx.Client(timeout=60) as client:
        for path, params in queries:

            def call(path: str = path, params: dict[str, str] = params) -> None:
                response = client.get(base + path, params=params, headers={"Accept": "application/dicom+json"})
                if response.status_code not in (200, 204):
                    raise RuntimeError(f"QIDO {path} {params} answered {response.status_code}: {response.text[:200]}")

            call()  # warm-up
            samples += latencies(call, repeat)
    return percentiles(samples)


def wado(base: str, instances: Sequence[Instance]) -> dict[str, float]:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    total = 0
    with httpx.Client(timeout=120) as client:
        start = time.perf_counter()
        for i in instances:
            url = f"{base}/studies/{i.study}/series/{i.series}/instances/{i.sop}"
            response = client.get(url, headers={"Accept": accept})
            if response.status_code != 200:
                raise RuntimeError(f"WADO {url} answered {response.status_code}")
            total += len(response.content)
        elapsed = time.perf_counter() - start
        meta = latencies(
            lambda: client.get(
                f"{base}/studies/{instances[0].study}/series/{instances[0].series}/instances/{instances[0].sop}/metadata",
                headers={"Accept": "application/dicom+json"},
            ).raise_for_status(),
            50,
        )
    return {"mb_per_s": total / elapsed / 1e6, **{f"metadata_{k}": v for k, v in percentiles(meta).items()}}


def cosmos_floor(env: dict[str, str], sample: Sequence[Instance], repeat: int) -> dict[str, float]:
    """The Cosmos stand-in alone: one study query of the QIDO mix sent straight to it."""
    from azure.cosmos import CosmosClient

    client = CosmosClient(env["DICOM_COSMOS_ENDPOINT"], env["DICOM_COSMOS_KEY"], enable_endpoint_discovery=False)
    container = client.get_database_client("dicom").get_container_client("index")
    sql = "SELECT TOP 100 * FROM c WHERE c.type = 'study' AND c.q.PatientID = @p ORDER BY c.sortKey ASC"
    params = [{"name": "@p", "value": sample[0].patient_id.casefold()}]

    def call() -> None:
        list(container.query_items(sql, parameters=params, enable_cross_partition_query=True))

    return percentiles(latencies(call, repeat))


def frames_and_study_metadata(base: str, multiframe: Instance, study_uid: str) -> dict[str, float]:
    """Latency of one frame (as stored, and rendered) of a large multi-frame instance vs the whole instance."""
    url = f"{base}/studies/{multiframe.study}/series/{multiframe.series}/instances/{multiframe.sop}"
    octets = {"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax=*'}
    whole = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    with httpx.Client(timeout=120) as client:

        def get(target: str, headers: dict[str, str]) -> None:
            response = client.get(target, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"GET {target} answered {response.status_code}")

        frame = percentiles(latencies(lambda: get(f"{url}/frames/17", octets), 30))
        rendered = percentiles(latencies(lambda: get(f"{url}/frames/17/rendered", {"Accept": "image/jpeg"}), 10))
        instance = percentiles(latencies(lambda: get(url, whole), 10))
        metadata = percentiles(
            latencies(lambda: get(f"{base}/studies/{study_uid}/metadata", {"Accept": "application/dicom+json"}), 30)
        )
    return {
        "frame_p50_ms": frame["p50_ms"],
        "rendered_frame_p50_ms": rendered["p50_ms"],
        "whole_instance_p50_ms": instance["p50_ms"],
        "study_metadata_p50_ms": metadata["p50_ms"],
    }


def floor(env: dict[str, str], instances: Sequence[Instance]) -> dict[str, float]:
    """Raw Azurite upload/download of the same bytes, and a bare HTTP round trip."""
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(env["DICOM_STORAGE"]).get_container_client("bench-floor")
    container.create_container()
    payload = sum(len(i.data) for i in instances)
    start = time.perf_counter()
    for n, i in enumerate(instances):
        container.upload_blob(f"{n}.dcm", i.data)
    upload = time.perf_counter() - start
    start = time.perf_counter()
    for n in range(len(instances)):
        container.download_blob(f"{n}.dcm").readall()
    download = time.perf_counter() - start
    return {
        "upload_instances_per_s": len(instances) / upload,
        "upload_mb_per_s": payload / upload / 1e6,
        "download_mb_per_s": payload / download / 1e6,
    }


def bare_http(url: str) -> dict[str, float]:
    with httpx.Client() as client:
        client.get(url)
        return percentiles(latencies(lambda: client.get(url), 200))


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"ours": {}, "orthanc": {}, "floor": {}}
    stow_set = list(generate(args.stow_instances, seed=11, rows=512, per_series=20))
    big = list(generate(args.wado_instances, seed=13, rows=1024, per_series=10))
    scale = list(generate(args.instances, seed=17, rows=64, multiframe_every=97, compressed_every=13))
    # One large multi-frame instance (32 frames of 1024 x 1024 x 16 bit = 64 MiB).
    (multiframe,) = generate(1, seed=19, rows=1024, multiframe_every=1, frames=32)
    print(
        f"dataset: STOW {len(stow_set)} x {len(stow_set[0].data) // 1024} KiB, "
        f"WADO {len(big)} x {len(big[0].data) // 1024} KiB, QIDO scale {len(scale)} instances",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="dicom-bench-") as tmp:
        work = Path(tmp)
        targets: list[tuple[str, Any]] = [("ours", our_service(work / "ours"))]
        if args.peer == "orthanc":
            targets.append(("orthanc", orthanc(work)))
        for name, context in targets:
            (work / name).mkdir(exist_ok=True)
            with context as started:
                base = started[0] if isinstance(started, tuple) else started
                out = results[name]
                print(f"[{name}] STOW ...", flush=True)
                third = len(stow_set) // 3
                out["stow_c1"] = stow(base, stow_set[:third], 1, 1)
                out["stow_c4"] = stow(base, stow_set[third : 2 * third], 4, 1)
                out["stow_batch20"] = stow(base, stow_set[2 * third :], 1, 20)
                out["wado"] = (stow(base, big, 4, 1), wado(base, big))[1]
                stow(base, [multiframe], 1, 1)
                out["frames"] = frames_and_study_metadata(base, multiframe, big[0].study)
                print(f"[{name}] loading {len(scale)} instances for QIDO ...", flush=True)
                first = min(1000, len(scale))
                stow(base, scale[:first], 4, 20)
                out["qido_1000"] = qido(base, query_mix(scale[:first]), args.repeat)
                if name == "ours":
                    results["floor"]["cosmos_1000"] = cosmos_floor(started[1], scale[:first], args.repeat)
                if len(scale) > first:
                    stow(base, scale[first:], 4, 20)
                    out[f"qido_{len(scale)}"] = qido(base, query_mix(scale[:first]), args.repeat)
                    if name == "ours":
                        results["floor"][f"cosmos_{len(scale)}"] = cosmos_floor(started[1], scale[:first], args.repeat)
                root = base.rsplit("/", 1)[0]
                out["bare_http"] = bare_http(f"{root}/system" if name == "orthanc" else f"{root}/bench-no-such-route")
                if name == "ours":
                    results["floor"].update(floor(started[1], big))
    return results


def table(results: dict[str, Any]) -> str:
    ours, peer, base = results["ours"], results.get("orthanc") or {}, results["floor"]
    rows: list[tuple[str, float | None, float | None, float | None, str]] = []

    def row(label: str, a: float | None, b: float | None, f: float | None, unit: str) -> None:
        rows.append((label, a, b, f, unit))

    for key, label in (
        ("stow_c1", "STOW 1/request c=1"),
        ("stow_c4", "STOW 1/request c=4"),
        ("stow_batch20", "STOW 20/request"),
    ):
        row(
            f"{label} instances/s",
            ours[key]["instances_per_s"],
            peer.get(key, {}).get("instances_per_s"),
            base.get("upload_instances_per_s"),
            "inst/s",
        )
        row(
            f"{label} MB/s",
            ours[key]["mb_per_s"],
            peer.get(key, {}).get("mb_per_s"),
            base.get("upload_mb_per_s"),
            "MB/s",
        )
    for key in sorted(k for k in ours if k.startswith("qido_")):
        for p in ("p50_ms", "p95_ms"):
            cosmos = base.get(f"cosmos_{key[5:]}", {}).get(p)
            row(f"QIDO {key[5:]} instances {p[:3]}", ours[key][p], peer.get(key, {}).get(p), cosmos, "ms")
    row(
        "WADO instance MB/s",
        ours["wado"]["mb_per_s"],
        peer.get("wado", {}).get("mb_per_s"),
        base.get("download_mb_per_s"),
        "MB/s",
    )
    row(
        "instance metadata p50",
        ours["wado"]["metadata_p50_ms"],
        peer.get("wado", {}).get("metadata_p50_ms"),
        None,
        "ms",
    )
    for key, label in (
        ("study_metadata_p50_ms", "study metadata (10 instances) p50"),
        ("frame_p50_ms", "one frame of a 64 MiB instance p50"),
        ("rendered_frame_p50_ms", "that frame rendered as JPEG p50"),
        ("whole_instance_p50_ms", "the whole 64 MiB instance p50"),
    ):
        row(label, ours["frames"][key], peer.get("frames", {}).get(key), None, "ms")
    row("bare HTTP round trip p50", ours["bare_http"]["p50_ms"], peer.get("bare_http", {}).get("p50_ms"), None, "ms")

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:,.2f}"

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or not b else f"{a / b:.2f}"

    header = f"{'measure':40} {'ours':>10} {'orthanc':>10} {'floor':>10} {'ours/orthanc':>13} {'ours/floor':>11}"
    lines = [header, "-" * len(header)]
    for label, a, b, f, _ in rows:
        lines.append(f"{label:40} {fmt(a):>10} {fmt(b):>10} {fmt(f):>10} {ratio(a, b):>13} {ratio(a, f):>11}")
    lines.append("floor: raw Azurite upload/download of the same bytes; for QIDO, one study query sent straight")
    lines.append("to the Cosmos DB stand-in.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", choices=["orthanc", "none"], default="orthanc")
    parser.add_argument(
        "--instances", type=int, default=3_000, help="QIDO scale (default 3,000; the Cosmos stand-in slows past that)"
    )
    parser.add_argument("--stow-instances", type=int, default=240)
    parser.add_argument("--wado-instances", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=20, help="runs of each QIDO query")
    args = parser.parse_args(argv)
    # SIGTERM must unwind the context managers, or the emulators and servers outlive the run.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    results = run(args)
    text = table(results)
    print("\n" + text)
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "results": results}, indent=2))
    print(f"\nwrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
