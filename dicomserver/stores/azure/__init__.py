"""The Azure implementations of the ports in :mod:`dicomserver.stores`.

* :mod:`.blob`: :class:`~dicomserver.stores.BlobStore` and
  :class:`~dicomserver.stores.ImportStore` on Azure Blob Storage;
* :mod:`.index`: :class:`~dicomserver.stores.IndexStore` on Azure Cosmos DB
  (NoSQL), the only module that writes Cosmos SQL; :mod:`.cosmos` builds its client;
* :mod:`.queue`: :class:`~dicomserver.stores.SyncQueue` on Azure Storage Queues,
  and the blob triggers' poison queue for the replay tool;
* :mod:`.counting`: the HTTP transport every SDK client uses, so each storage
  round trip is counted (:mod:`dicomserver.opcount`).

SDK exceptions become :mod:`dicomserver.errors` here; nothing outside this
package (and ``dicomserver/wiring.py``, which builds these) imports Azure.
"""

from __future__ import annotations

from azure.core.exceptions import ClientAuthenticationError

from ...errors import DependencyUnavailable, dependency_error


def failure(message: str, exc: BaseException) -> DependencyUnavailable:
    """The service error for a failed SDK call: 424 when the dependency refused our identity (401, 403,
    or no token could be had for it), else 503."""
    status = 401 if isinstance(exc, ClientAuthenticationError) else getattr(exc, "status_code", None)
    return dependency_error(message, status if isinstance(status, int) else None)
