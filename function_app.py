"""The Azure Functions app: registers the blueprints of ``functions/``; nothing else."""

import azure.functions as func

from functions import (
    bulk_update,
    changefeed,
    delete,
    expiry,
    extended_query_tags,
    fhir_sync,
    ingest,
    operations,
    partitions,
    qido,
    stow,
    wado,
)
from functions._http import in_partitions

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

BLUEPRINTS = (stow, bulk_update, wado, qido, delete, changefeed, operations, ingest, fhir_sync, expiry, partitions)

for module in BLUEPRINTS:
    blueprint = module.bp
    app.register_functions(blueprint)

app.register_functions(extended_query_tags.bp)  # not per data partition: tags apply to every partition (Azure)

# Data partitions: every DICOMweb resource function again at v2/partitions/{partition}/... (functions/_http.py).
app.register_functions(in_partitions(*(module.bp for module in BLUEPRINTS)))
