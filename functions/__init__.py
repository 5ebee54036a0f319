"""Azure Functions adapters: the only package that imports ``azure.functions``.

Modules here keep real (non-string) annotations: the Functions Python worker
inspects them to bind FastAPI ``Request`` objects in HTTP-streams mode, so they
do not use ``from __future__ import annotations``.
"""
