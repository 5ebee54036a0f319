"""FHIR sync: every stored study as an R4 ImagingStudy with its Patient and Endpoint.

``mapping.py`` builds the resources from the index (pure, validated with the
``fhirclient`` R4 models), ``client.py`` talks to the FHIR server with
conditional requests, ``sync.py`` rebuilds one study from current state.
"""

from __future__ import annotations
