"""A hostile-input corpus against the running host: tiny decompression bombs and absurd requests.

Each bomb is stored once through STOW, then retrieved every way (default Accept, as stored, JPEG
2000, frames, rendered, study and series) while the host's RSS is sampled.  What decodes more than
the budget (``DICOM_MAX_DECODED_FRAME_BYTES`` per frame, ``DICOM_MAX_DECODED_BYTES`` per request) is
a 406 before anything is decoded; as-stored requests are 200; what fits the budget is decoded one
frame at a time and is a 200 too.  Frame lists of thousands of entries and Range headers with
thousands of digits are 4xx.  RSS must stay within :data:`CEILING_MB` of where it started, and the
host must serve a normal request afterwards.  The output lists every answer and the peak RSS.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import psutil
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from dicomserver.settings import Settings
from dicomserver.transcode import decoded_frame_bytes
from tests.dicomfiles import (
    deflated_declaring,
    jpeg2000_zeros,
    jpeg_ls_declaring,
    make_instance,
    multipart_body,
    rle_zeros,
    tiled_jpeg2000_zeros,
    with_pixels,
)
from tests.e2e.conftest import HOST_PIDS

#: How far the host's RSS may rise above where it was before the first retrieve.
CEILING_MB = 300
DEFAULTS = Settings()
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
OCTETS = 'multipart/related; type="application/octet-stream"'
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
DEFLATED = "1.2.840.10008.1.2.1.99"


@dataclass
class Bomb:
    """A stored instance and what decoding it would take."""

    name: str
    data: bytes
    sop: str = ""
    series: str = ""
    frames: int = 1
    frame_bytes: int = 0
    transfer_syntax: str = ""

    def __post_init__(self) -> None:
        ds = pydicom.dcmread(io.BytesIO(self.data), stop_before_pixels=True)
        self.sop, self.series = ds.SOPInstanceUID, ds.SeriesInstanceUID
        self.frames = int(ds.get("NumberOfFrames", 1) or 1)
        self.frame_bytes = decoded_frame_bytes(ds)
        self.transfer_syntax = str(ds.file_meta.TransferSyntaxUID)

    @property
    def frame_fits(self) -> bool:
        return self.frame_bytes <= DEFAULTS.max_decoded_frame_bytes

    def fits(self, frames: int) -> bool:
        return self.frame_fits and self.frame_bytes * frames <= DEFAULTS.max_decoded_bytes


def corpus(study: str) -> list[Bomb]:
    """Tiny files that decode to hundreds of MiB or more (sizes in the names are the decoded images)."""
    series = generate_uid()

    def j2k(rows: int, frames: int, codestream: bytes, bits: int = 16) -> bytes:
        return with_pixels(
            rows=rows,
            columns=rows,
            frames=frames,
            bits=bits,
            transfer_syntax=JPEG2000_LOSSLESS,
            pixel_data=encapsulate([codestream] * frames),
            study=study,
            series=series,
        )

    zeros = jpeg2000_zeros(4096)
    return [
        Bomb("jpeg2000 4096² x1 (32 MiB)", j2k(4096, 1, zeros)),
        Bomb("jpeg2000 4096² x16 (512 MiB)", j2k(4096, 16, zeros)),
        Bomb("jpeg2000 4096² x64 (2 GiB)", j2k(4096, 64, zeros)),
        Bomb("jpeg2000 16384² (256 MiB/frame)", j2k(16384, 1, tiled_jpeg2000_zeros(4, 4096, bits=8), bits=8)),
        Bomb(
            "rle 2048² x16 (128 MiB)",
            with_pixels(
                rows=2048,
                columns=2048,
                frames=16,
                transfer_syntax="1.2.840.10008.1.2.5",
                pixel_data=encapsulate([rle_zeros(2048, 2048, bits=16)] * 16),
                study=study,
                series=series,
            ),
        ),
        Bomb(
            "rle 8192² rgb (192 MiB/frame)",
            with_pixels(
                rows=8192,
                columns=8192,
                samples=3,
                bits=8,
                transfer_syntax="1.2.840.10008.1.2.5",
                pixel_data=encapsulate([rle_zeros(8192, 8192, samples=3)]),
                study=study,
                series=series,
            ),
        ),
        Bomb(
            "jpeg-ls declaring 16384² (512 MiB)",
            with_pixels(
                rows=16384,
                columns=16384,
                transfer_syntax="1.2.840.10008.1.2.4.80",
                pixel_data=encapsulate([jpeg_ls_declaring(16384)]),
                study=study,
                series=series,
            ),
        ),
        Bomb("deflated declaring 32768² (2 GiB)", deflated_declaring(32768, 32768, 1 << 20, study=study)),
    ]


@dataclass
class Sampler:
    """The host's RSS (its process and any children), sampled every 10 ms in a thread."""

    pid: int
    peak: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def rss(self) -> int:
        host = psutil.Process(self.pid)
        return host.memory_info().rss + sum(child.memory_info().rss for child in host.children(recursive=True))

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.rss())
            self.done.wait(0.01)

    def reset(self) -> int:
        """Start a new window; returns the previous window's peak."""
        previous, self.peak = self.peak, self.rss()
        return previous


@dataclass
class Answer:
    case: str
    request: str
    status: int
    expected: str
    peak_mb: float
    seconds: float


def requests_for(base_url: str, study: str, bomb: Bomb) -> Iterator[tuple[str, str, dict[str, str], str]]:
    """(label, URL, headers, expected status) for every retrieve variant of one bomb."""
    instance = f"{base_url}/studies/{study}/series/{bomb.series}/instances/{bomb.sop}"
    whole = "200" if bomb.fits(bomb.frames) else "406"
    stored_j2k = bomb.transfer_syntax == JPEG2000_LOSSLESS
    framed = bomb.transfer_syntax != DEFLATED  # a deflated file has no frame table: its frames are 404
    one = ("200" if bomb.fits(1) else "406") if framed else "404"
    every = ",".join(str(n) for n in range(1, bomb.frames + 1))
    yield "instance, default Accept", instance, {"Accept": MULTIPART_DICOM}, whole
    yield "instance, application/dicom", instance, {"Accept": "application/dicom"}, whole
    yield "instance, as stored", instance, {"Accept": f"{MULTIPART_DICOM}; transfer-syntax=*"}, "200"
    j2k = {"Accept": f"{MULTIPART_DICOM}; transfer-syntax={JPEG2000_LOSSLESS}"}
    yield "instance, JPEG 2000", instance, j2k, "200" if stored_j2k else whole
    yield "frames/1, default Accept", f"{instance}/frames/1", {"Accept": OCTETS}, one
    yield (
        "frames/1, as stored",
        f"{instance}/frames/1",
        {"Accept": f"{OCTETS}; transfer-syntax=*"},
        ("200" if framed else "404"),
    )
    jp2 = {"Accept": 'multipart/related; type="image/jp2"'}
    yield "frames/1, image/jp2", f"{instance}/frames/1", jp2, ("200" if stored_j2k else one)
    if bomb.frames > 1:
        all_fit = "200" if bomb.fits(bomb.frames) else "406"
        yield f"frames/1..{bomb.frames}, default Accept", f"{instance}/frames/{every}", {"Accept": OCTETS}, all_fit
    yield "rendered", f"{instance}/rendered", {"Accept": "image/jpeg"}, "200" if bomb.fits(1) else "406"
    yield (
        "frames/1/rendered",
        f"{instance}/frames/1/rendered",
        {"Accept": "image/png"},
        ("200" if bomb.fits(1) else "406"),
    )
    yield "frames/1,1", f"{instance}/frames/1,1", {"Accept": f"{OCTETS}; transfer-syntax=*"}, "400"
    yield "frames/1 x 5,000", f"{instance}/frames/{','.join(['1'] * 5000)}", {"Accept": OCTETS}, "4xx"
    many = ",".join(str(n) for n in range(1, 1002))
    yield "frames/1..1,001", f"{instance}/frames/{many}", {"Accept": f"{OCTETS}; transfer-syntax=*"}, "4xx"
    yield "frames/<5,000 digits>", f"{instance}/frames/{'9' * 5000}", {"Accept": OCTETS}, "4xx"


@pytest.mark.timeout(900)
def test_hostile_pixel_data_never_exhausts_the_host(base_url: str) -> None:
    study = generate_uid()
    bombs = corpus(study)
    normal = make_instance(study=generate_uid(), rows=64, columns=64)
    body, ctype = multipart_body([bomb.data for bomb in bombs] + [normal])
    normal_ds = pydicom.dcmread(io.BytesIO(normal))
    normal_url = (
        f"{base_url}/studies/{normal_ds.StudyInstanceUID}/series/{normal_ds.SeriesInstanceUID}"
        f"/instances/{normal_ds.SOPInstanceUID}"
    )
    with httpx.Client(timeout=300) as client:
        stored = client.post(f"{base_url}/studies", content=body, headers={"Content-Type": ctype})
        assert stored.status_code == 200, stored.text  # stored once, through STOW
        sampler = Sampler(HOST_PIDS[base_url])
        baseline = sampler.rss()
        sampler.reset()
        thread = threading.Thread(target=sampler.run, daemon=True)
        thread.start()
        answers: list[Answer] = []

        def ask(case: str, label: str, url: str, headers: dict[str, str], expected: str) -> None:
            sampler.reset()
            started = time.perf_counter()
            with client.stream("GET", url, headers=headers) as response:
                for _ in response.iter_bytes():
                    pass  # drained: a 200 may be hundreds of MiB, streamed
            seconds = time.perf_counter() - started
            peak = max(sampler.reset(), sampler.rss())
            answers.append(Answer(case, label, response.status_code, expected, (peak - baseline) / 2**20, seconds))

        try:
            for bomb in bombs:
                for label, url, headers, expected in requests_for(base_url, study, bomb):
                    ask(bomb.name, label, url, headers, expected)
            # The bombs share a series and a study: transcoding them is refused before the response starts.
            series = f"{base_url}/studies/{study}/series/{bombs[0].series}"
            ask("(series, study)", "series, default Accept", series, {"Accept": MULTIPART_DICOM}, "406")
            ask(
                "(series, study)",
                "study, default Accept",
                f"{base_url}/studies/{study}",
                {"Accept": MULTIPART_DICOM},
                "406",
            )
            as_stored = {"Accept": f"{MULTIPART_DICOM}; transfer-syntax=*"}
            ask("(series, study)", "study, as stored", f"{base_url}/studies/{study}", as_stored, "200")
            huge = "9" * 5000
            for label, value in (
                ("Range bytes=<5,000 digits>-", f"bytes={huge}-"),
                ("Range bytes=0-<5,000 digits>", f"bytes=0-{huge}"),
                ("Range bytes=-<5,000 digits>", f"bytes=-{huge}"),
            ):
                octets = {"Accept": "application/octet-stream", "Range": value}
                ask("(bulk data)", label, f"{normal_url}/bulkdata/7FE00010", octets, "416")
            # The host still serves normal requests, transcoded and rendered.
            ask("(normal)", "instance, default Accept", normal_url, {"Accept": MULTIPART_DICOM}, "200")
            ask("(normal)", "rendered", f"{normal_url}/rendered", {"Accept": "image/png"}, "200")
        finally:
            sampler.done.set()
            thread.join()

    report(answers, baseline)
    wrong = [a for a in answers if not (str(a.status) == a.expected or (a.expected == "4xx" and 400 <= a.status < 500))]
    assert not wrong, "\n".join(f"{a.case} / {a.request}: {a.status}, expected {a.expected}" for a in wrong)
    peak_mb = max(a.peak_mb for a in answers)
    assert peak_mb < CEILING_MB, f"host RSS rose {peak_mb:.0f} MB"


def report(answers: list[Answer], baseline: int) -> None:
    """Every answer, then per case its status classes and peak RSS, then the totals."""
    width = max(len(a.case) for a in answers)
    for a in answers:
        print(f"{a.case:<{width}}  {a.request:<30} {a.status}  RSS {a.peak_mb:+7.1f} MB  {a.seconds:6.2f} s")
    print()
    for case in dict.fromkeys(a.case for a in answers):
        mine = [a for a in answers if a.case == case]
        classes = Counter(f"{a.status // 100}xx" for a in mine)
        print(f"{case:<{width}}  {dict(sorted(classes.items()))}  peak RSS {max(a.peak_mb for a in mine):+.1f} MB")
    classes = Counter(f"{a.status // 100}xx" for a in answers)
    print(
        f"{len(answers)} requests; status classes {dict(sorted(classes.items()))}; host RSS "
        f"{baseline / 2**20:.0f} MB before, peak {max(a.peak_mb for a in answers):+.1f} MB over it"
    )
