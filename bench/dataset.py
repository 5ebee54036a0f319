"""Seeded synthetic DICOM: patients, studies, series and instances with realistic headers.

Names with non-ASCII characters, dates spread over years, a modality mix,
accession numbers, and pixel data of configurable size, including
multi-frame and RLE-compressed instances.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

FAMILY = ["Müller", "Øvergård", "Nuñez", "Dvořák", "Smith", "Ng", "O'Brien", "Łukasiewicz", "Sørensen", "García"]
GIVEN = ["Jürgen", "Åse", "José", "Zoë", "John", "Mei", "Siobhán", "Renée", "Björn", "Ana"]
MODALITIES = [
    ("CT", "1.2.840.10008.5.1.4.1.1.2"),
    ("MR", "1.2.840.10008.5.1.4.1.1.4"),
    ("CR", "1.2.840.10008.5.1.4.1.1.1"),
]
MODELS = ["Scanner X", "Magnet Y", "Radiograph Z"]


@dataclass(frozen=True)
class Instance:
    """One generated instance: its Part 10 bytes and the keys queries use."""

    data: bytes
    study: str
    series: str
    sop: str
    patient_id: str
    patient_name: str
    study_date: str
    modality: str
    accession: str


def _dataset(rng: random.Random, study: dict[str, str], series: dict[str, str], number: int) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = series["sop_class"]
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = series["uid"]
    ds.PatientID = study["patient_id"]
    ds.PatientName = study["patient_name"]
    ds.PatientBirthDate = study["birth_date"]
    ds.PatientSex = study["sex"]
    ds.StudyDate = study["date"]
    ds.StudyTime = "101500"
    ds.AccessionNumber = study["accession"]
    ds.StudyDescription = study["description"]
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.Modality = series["modality"]
    ds.ManufacturerModelName = series["model"]
    ds.SeriesNumber = int(series["number"])
    ds.InstanceNumber = number
    return ds


def _pixels(ds: Dataset, rng: random.Random, rows: int, frames: int, compress: bool) -> None:
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    seed = rng.randrange(1 << 30)
    shape = (frames, rows, rows) if frames > 1 else (rows, rows)
    # Smooth-ish data so RLE compresses like a real image instead of noise.
    base = np.random.default_rng(seed).integers(0, 64, size=shape, dtype=np.uint16)
    pixels = (np.cumsum(base, axis=-1) % 4096).astype(np.uint16)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if compress:
        ds.compress(RLELossless, pixels)
    else:
        ds.PixelData = pixels.tobytes()


def generate(
    instances: int,
    *,
    seed: int = 7,
    rows: int = 64,
    per_series: int = 10,
    series_per_study: int = 3,
    studies_per_patient: int = 2,
    multiframe_every: int = 0,
    compressed_every: int = 0,
    frames: int = 8,
) -> Iterator[Instance]:
    """Yield ``instances`` instances, deterministically for a given ``seed``."""
    rng = random.Random(seed)
    made = 0
    patient_no = 0
    while made < instances:
        patient_no += 1
        patient_id = f"BENCH-{seed}-{patient_no:06d}"
        name = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
        birth = f"{rng.randint(1930, 2015)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        for _ in range(studies_per_patient):
            study = {
                "uid": generate_uid(),
                "patient_id": patient_id,
                "patient_name": name,
                "birth_date": birth,
                "sex": rng.choice("MFO"),
                "date": f"{rng.randint(2015, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                "accession": f"ACC{rng.randrange(10**8):08d}",
                "description": rng.choice(["Chest", "Head", "Abdomen", "Knee"]),
            }
            for series_no in range(1, series_per_study + 1):
                modality, sop_class = rng.choice(MODALITIES)
                series = {
                    "uid": generate_uid(),
                    "modality": modality,
                    "sop_class": sop_class,
                    "model": MODELS[MODALITIES.index((modality, sop_class))],
                    "number": str(series_no),
                }
                for number in range(1, per_series + 1):
                    if made >= instances:
                        return
                    ds = _dataset(rng, study, series, number)
                    count = frames if multiframe_every and made % multiframe_every == 0 else 1
                    compress = bool(compressed_every and made % compressed_every == 0)
                    _pixels(ds, rng, rows, count, compress)
                    out = io.BytesIO()
                    ds.save_as(out, enforce_file_format=True)
                    made += 1
                    yield Instance(
                        out.getvalue(),
                        study["uid"],
                        series["uid"],
                        str(ds.SOPInstanceUID),
                        patient_id,
                        name,
                        study["date"],
                        modality,
                        study["accession"],
                    )
