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
