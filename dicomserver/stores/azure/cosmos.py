"""Cosmos DB client construction and the emulator's quirks, in one place.

Local development uses ``@vercel/cosmosdb-server`` as a Cosmos DB stand-in.
It differs from real Cosmos DB in ways the rest of the code must not see:

* it speaks plain HTTP (``--no-ssl``) and has no endpoint discovery, so the
  client is built with ``enable_endpoint_discovery=False``;
* a point read of a missing item answers 500 instead of 404, so
  :func:`read_item_or_none` treats "500 on a point read" as "missing" when
  talking to the emulator (and only then);
* it lacks DISTINCT, OFFSET/LIMIT, GROUP BY, 3-argument STARTSWITH/CONTAINS,
  transactional batch, TTL and change feed, so the index code uses none of
  them (only TOP, ORDER BY, COUNT, EXISTS, ARRAY_CONTAINS, continuation
  tokens, etag-conditional replace);
* a query with ``partition_key=`` needs the partition-key predicate in its
  WHERE text: every single-partition query in ``index.py`` has ``c.pk = @pk``.
"""

from __future__ import annotations

from typing import Any

from azure.cosmos import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosHttpResponseError, CosmosResourceNotFoundError

from ...settings import Settings
from .counting import CountingTransport


def make_cosmos_client(settings: Settings, credential: Any = None) -> CosmosClient:
    """Build the Cosmos client: key for the emulator, ``credential`` in Azure."""
    if settings.cosmos_emulator:
        return CosmosClient(
            settings.cosmos_endpoint,
            credential=settings.cosmos_key or "emulator",
            enable_endpoint_discovery=False,
            connection_verify=False,
            transport=CountingTransport("index"),
        )
    if settings.cosmos_key:
        return CosmosClient(
            settings.cosmos_endpoint, credential=settings.cosmos_key, transport=CountingTransport("index")
        )
    return CosmosClient(settings.cosmos_endpoint, credential=credential, transport=CountingTransport("index"))


def read_item_or_none(
    container: ContainerProxy, item: str, partition_key: str, emulator: bool
) -> dict[str, Any] | None:
    """Point-read an item; ``None`` if it does not exist."""
    try:
        result: dict[str, Any] = container.read_item(item, partition_key=partition_key)
        return result
    except CosmosResourceNotFoundError:
        return None
    except CosmosHttpResponseError as exc:
        if emulator and exc.status_code == 500:
            return None
        raise
