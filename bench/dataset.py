"""Synthetic CT studies shaped like what modalities send, for ``make bench``.

* a CT study is 2 series x 50 instances (``study``), 128 x 128 x 16-bit slices (~33 KB each);
* the long series is one study with one 500-instance series of the same slices (``long_series``).

Headers are realistic enough for the QIDO mix (names with non-ASCII characters, study dates spread
over 2015-2025, accession numbers, two studies per patient, and a ProtocolName of its own per study,
which is no core search key: the QIDO on an undeclared attribute).  Pixel data is smooth random noise.
Every UID is fresh (``generate_uid``) and every PatientID carries the run's token, so two runs never
share an identifier; the header values other than UIDs are deterministic for a given ``seed``.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

FAMILY = ["Müller", "Øvergård", "Nuñez", "Dvořák", "Smith", "Ng", "O'Brien", "Łukasiewicz", "Sørensen", "García"]
GIVEN = ["Jürgen", "Åse", "José", "Zoë", "John", "Mei", "Siobhán", "Renée", "Björn", "Ana"]
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DESCRIPTIONS = ["CT Chest", "CT Head", "CT Abdomen", "CT Knee"]

#: The shapes of the benchmark (see the module docstring).
SERIES_PER_STUDY = 2
INSTANCES_PER_SERIES = 50
LONG_SERIES = 500
ROWS = 128


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
    accession: str
    protocol: str = ""


Study = list[Instance]


class Generator:
    """Makes studies for one run: ``Generator(run="a1b2c3", seed=7)``."""

    def __init__(self, run: str, seed: int = 7, rows: int = ROWS, studies_per_patient: int = 2) -> None:
        self.run = run
        self.rows = rows
        self.studies_per_patient = studies_per_patient
        self._rng = random.Random(seed)
        self._pixels = np.random.default_rng(seed)
        self._studies = 0
        self._patient: dict[str, str] = {}

    def _next_patient(self) -> dict[str, str]:
        if self._studies % self.studies_per_patient == 0:
            rng = self._rng
            self._patient = {
                "id": f"BENCH-{self.run}-{self._studies // self.studies_per_patient + 1:05d}",
                "name": f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}",
                "birth": f"{rng.randint(1930, 2015)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                "sex": rng.choice("MFO"),
            }
        self._studies += 1
        return self._patient

    def study(self, series_sizes: Sequence[int] = (INSTANCES_PER_SERIES,) * SERIES_PER_STUDY) -> Study:
        """One CT study with one series per entry of ``series_sizes``."""
        rng = self._rng
        patient = self._next_patient()
        study = Dataset()
        study.SpecificCharacterSet = "ISO_IR 192"
        study.StudyInstanceUID = generate_uid()
        study.PatientID = patient["id"]
        study.PatientName = patient["name"]
        study.PatientBirthDate = patient["birth"]
        study.PatientSex = patient["sex"]
        study.StudyDate = f"{rng.randint(2015, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        study.StudyTime = f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}00"
        study.AccessionNumber = f"ACC{rng.randrange(10**8):08d}"
        study.StudyDescription = rng.choice(DESCRIPTIONS)
        study.ReferringPhysicianName = "Referrer^Rita"
        study.StudyID = str(rng.randrange(10**6))
        # Not a core search key: the QIDO on an undeclared attribute.  One value per study, from no
        # random draw, so the other header values stay what they were.
        study.ProtocolName = f"Bench {self.run} protocol {self._studies:05d}"
        out: Study = []
        for number, size in enumerate(series_sizes, start=1):
            series_uid = generate_uid()
            for instance_number in range(1, size + 1):
                out.append(self._instance(study, series_uid, number, instance_number))
        return out

    def studies(self, instances: int) -> list[Study]:
        """Enough 100-instance studies for ``instances`` instances (the last one cut short)."""
        out: list[Study] = []
        left = instances
        while left > 0:
            full = SERIES_PER_STUDY * INSTANCES_PER_SERIES
            if left >= full:
                sizes: tuple[int, ...] = (INSTANCES_PER_SERIES,) * SERIES_PER_STUDY
            else:
                sizes = tuple(s for s in (min(left, INSTANCES_PER_SERIES), left - INSTANCES_PER_SERIES) if s > 0)
            out.append(self.study(sizes))
            left -= sum(sizes)
        return out

    def long_series(self, size: int = LONG_SERIES) -> Study:
        """One study with a single series of ``size`` instances."""
        return self.study((size,))

    def _instance(self, study: Dataset, series_uid: str, series_number: int, number: int) -> Instance:
        ds = Dataset()
        ds.update(study)
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.Manufacturer = "Bench"
        ds.ManufacturerModelName = "Scanner X"
        ds.BodyPartExamined = "CHEST"
        ds.SeriesNumber = series_number
        ds.SeriesDescription = f"Axial {series_number}"
        ds.InstanceNumber = number
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "1.0"
        ds.ImagePositionPatient = ["-125.0", "-125.0", f"{-number * 1.0:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["0.9765625", "0.9765625"]
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.Rows = ds.Columns = self.rows
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        noise = self._pixels.integers(0, 64, size=(self.rows, self.rows), dtype=np.uint16)
        ds.PixelData = (np.cumsum(noise, axis=-1) % 4096).astype(np.uint16).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return Instance(
            buffer.getvalue(),
            str(study.StudyInstanceUID),
            series_uid,
            str(ds.SOPInstanceUID),
            str(study.PatientID),
            str(study.PatientName),
            str(study.StudyDate),
            str(study.AccessionNumber),
            str(study.ProtocolName),
        )


def flatten(studies: Sequence[Study]) -> Iterator[Instance]:
    """The instances of ``studies``, study after study."""
    for study in studies:
        yield from study
