"""dicomserver: a DICOMweb service (Azure DICOM service v2 behaviour) on Azure Functions.

The package is importable and testable without the Functions host; the
adapters in ``functions/`` call its services with the stores built by
:mod:`dicomserver.wiring`.
"""

from __future__ import annotations

from pydicom import config as _pydicom_config

# The service validates what it needs itself (validation.py) and must accept
# and store datasets with odd values as sent; pydicom's own read-time checks
# would only add warnings per element.
_pydicom_config.settings.reading_validation_mode = _pydicom_config.IGNORE

__all__: list[str] = []
