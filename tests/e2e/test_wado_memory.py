"""Retrieving a large study streams: the host's memory stays flat (sampled with psutil)."""

from __future__ import annotations

import io
import os
import threading

import httpx
import numpy as np
import psutil
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.e2e.conftest import HOST_PIDS

#: MEMORY_TEST_INSTANCES=128 makes it a 1 GiB study (not in CI: storing it takes minutes here).
INSTANCES = int(os.environ.get("MEMORY_TEST_INSTANCES", "24"))
SIDE = 2048  # 2048 x 2048 x 16 bit = 8 MiB of pixel data per instance → about 200 MB in all


def big_instance(study: str, series: str) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), study, series
    ds.PatientID, ds.Modality = "MEMORY", "OT"
    ds.Rows = ds.Columns = SIDE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (
        np.random.default_rng(len(ds.SOPInstanceUID)).integers(0, 65535, SIDE * SIDE, dtype=np.uint16).tobytes()
    )
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_retrieving_a_large_study_keeps_host_memory_bounded(base_url: str) -> None:
    study, series = generate_uid(), generate_uid()
    total = 0
    with httpx.Client(timeout=120) as client:
        for _ in range(INSTANCES):
            data = big_instance(study, series)
            total += len(data)
            response = client.post(f"{base_url}/studies", content=data, headers={"Content-Type": "application/dicom"})
            assert response.status_code == 200
        host = psutil.Process(HOST_PIDS[base_url])
        baseline = host.memory_info().rss
        peak = baseline
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, host.memory_info().rss)
                done.wait(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        received = 0
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        try:
            with client.stream("GET", f"{base_url}/studies/{study}", headers={"Accept": accept}) as response:
                assert response.status_code == 200
                for chunk in response.iter_bytes():
                    received += len(chunk)
        finally:
            done.set()
            sampler.join()
    assert received > total  # every instance, plus the multipart framing
    growth_mb = (peak - baseline) / 2**20
    print(f"streamed {total / 2**20:.0f} MB; host RSS grew {growth_mb:.1f} MB")
    assert growth_mb < 64, f"host memory grew by {growth_mb:.0f} MB while streaming {total / 2**20:.0f} MB"
