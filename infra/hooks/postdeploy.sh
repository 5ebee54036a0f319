#!/usr/bin/env bash
# shellcheck shell=bash
# azd postdeploy hook (azure.yaml), once the code is published: waits (bounded) for the function app to
# start, then subscribes its blob triggers to the storage account's Event Grid system topic through the
# blobs_extension webhook (that key exists only now), and prints the DICOMweb URL.
# The steps are infra/deploy.sh's (deploy.sh alone runs them all); add --dry-run to list the commands.
set -euo pipefail
exec bash "$(dirname "$0")/../deploy.sh" --azd --phase postdeploy "$@"
