"""The Azure Functions app: registers the blueprints of ``functions/``; nothing else."""

import azure.functions as func

from functions import changefeed, delete, fhir_sync, ingest, operations, qido, stow, wado

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

for blueprint in (stow.bp, wado.bp, qido.bp, delete.bp, changefeed.bp, operations.bp, ingest.bp, fhir_sync.bp):
    app.register_functions(blueprint)
