#!/usr/bin/env bash
# shellcheck shell=bash
# azd postprovision hook (azure.yaml), once main.bicep is deployed: grants the app's identity FHIR Data
# Contributor on an existing FHIR service (EXISTING_FHIR_URL; one created by main.bicep gets it from
# roles.bicep) and the signed-in user the app role DICOM Data Owner.
# The steps are infra/deploy.sh's (deploy.sh alone runs them all); add --dry-run to list the commands.
set -euo pipefail
exec bash "$(dirname "$0")/../deploy.sh" --azd --phase postprovision "$@"
