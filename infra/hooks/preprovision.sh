#!/usr/bin/env bash
# shellcheck shell=bash
# azd preprovision hook (azure.yaml), before any resource exists: validates the name prefix (NAME_PREFIX,
# else AZURE_ENV_NAME lowercased without its hyphens) and the existing FHIR service (EXISTING_FHIR_URL),
# creates or updates the Entra app registration <prefix>-dicomweb, and stores NAME_PREFIX and
# API_CLIENT_ID (and EXISTING_FHIR_RESOURCE_ID) in the azd environment for infra/main.parameters.json.
# The steps are infra/deploy.sh's (deploy.sh alone runs them all); add --dry-run to list the commands.
set -euo pipefail
exec bash "$(dirname "$0")/../deploy.sh" --azd --phase preprovision "$@"
