#!/usr/bin/env bash
# One-command deployment of the DICOM service into Azure with the az CLI.
#
#   infra/deploy.sh --resource-group RG --location westeurope --name-prefix dicomsvc \
#       [--subscription SUB] [--existing-fhir-url URL] [--cors-origin https://viewer.example.org]
#
# Creates or reuses: the resource group; the Entra app registration exposing the DICOMweb API with
# the app roles "DICOM Data Owner" (DICOM.Data.Owner) and "DICOM Data Reader" (DICOM.Data.Reader);
# everything in infra/main.bicep; the code (zip deploy with remote build); the Event Grid
# subscriptions that feed the blob triggers; and the Owner role for the signed-in user.
# Remove everything with:  az group delete --name RG --yes   (the app registration stays; delete it
# with az ad app delete --id <appId> if you want).
set -euo pipefail

usage() { sed -n '2,12p' "$0"; exit "${1:-0}"; }

RG="" LOCATION="" PREFIX="" SUBSCRIPTION="" FHIR_URL="" CORS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --resource-group) RG="$2"; shift 2 ;;
    --location) LOCATION="$2"; shift 2 ;;
    --name-prefix) PREFIX="$2"; shift 2 ;;
    --subscription) SUBSCRIPTION="$2"; shift 2 ;;
    --existing-fhir-url) FHIR_URL="$2"; shift 2 ;;
    --cors-origin) CORS="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[[ -n "$RG" && -n "$LOCATION" && -n "$PREFIX" ]] || usage 2
command -v az >/dev/null || { echo "the az CLI is required" >&2; exit 2; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
AZURE_CLI_APP_ID="04b07795-8ddb-461a-bbee-02f9e1bf7b46"   # lets `az account get-access-token` get API tokens
[[ -n "$SUBSCRIPTION" ]] && az account set --subscription "$SUBSCRIPTION"
TENANT_ID="$(az account show --query tenantId -o tsv)"

echo "==> resource group $RG ($LOCATION)"
az group create --name "$RG" --location "$LOCATION" --output none

echo "==> Entra app registration ${PREFIX}-dicomweb"
APP_ID="$(az ad app list --display-name "${PREFIX}-dicomweb" --query '[0].appId' -o tsv)"
if [[ -z "$APP_ID" ]]; then
  APP_ID="$(az ad app create --display-name "${PREFIX}-dicomweb" --sign-in-audience AzureADMyOrg --query appId -o tsv)"
fi
APP_OBJECT_ID="$(az ad app show --id "$APP_ID" --query id -o tsv)"
OWNER_ROLE_ID="$(az ad app show --id "$APP_ID" --query "appRoles[?value=='DICOM.Data.Owner'].id | [0]" -o tsv)"
READER_ROLE_ID="$(az ad app show --id "$APP_ID" --query "appRoles[?value=='DICOM.Data.Reader'].id | [0]" -o tsv)"
SCOPE_ID="$(az ad app show --id "$APP_ID" --query "api.oauth2PermissionScopes[?value=='user_impersonation'].id | [0]" -o tsv)"
OWNER_ROLE_ID="${OWNER_ROLE_ID:-$(cat /proc/sys/kernel/random/uuid)}"
READER_ROLE_ID="${READER_ROLE_ID:-$(cat /proc/sys/kernel/random/uuid)}"
SCOPE_ID="${SCOPE_ID:-$(cat /proc/sys/kernel/random/uuid)}"
# Scope and roles first, then pre-authorize the Azure CLI for the scope (Graph wants them in two steps).
az rest --method PATCH --uri "https://graph.microsoft.com/v1.0/applications/${APP_OBJECT_ID}" \
  --headers "Content-Type=application/json" --body "$(cat <<JSON
{
  "identifierUris": ["api://${APP_ID}"],
  "api": {
    "requestedAccessTokenVersion": 2,
    "oauth2PermissionScopes": [{
      "id": "${SCOPE_ID}", "value": "user_impersonation", "type": "User", "isEnabled": true,
      "adminConsentDisplayName": "Access the DICOMweb API", "adminConsentDescription": "Access the DICOMweb API",
      "userConsentDisplayName": "Access the DICOMweb API", "userConsentDescription": "Access the DICOMweb API"
    }]
  },
  "appRoles": [
    {"id": "${OWNER_ROLE_ID}", "value": "DICOM.Data.Owner", "displayName": "DICOM Data Owner",
     "description": "Read, store and delete DICOM data", "allowedMemberTypes": ["User", "Application"], "isEnabled": true},
    {"id": "${READER_ROLE_ID}", "value": "DICOM.Data.Reader", "displayName": "DICOM Data Reader",
     "description": "Read DICOM data", "allowedMemberTypes": ["User", "Application"], "isEnabled": true}
  ]
}
JSON
)"
az rest --method PATCH --uri "https://graph.microsoft.com/v1.0/applications/${APP_OBJECT_ID}" \
  --headers "Content-Type=application/json" \
  --body "{\"api\": {\"preAuthorizedApplications\": [{\"appId\": \"${AZURE_CLI_APP_ID}\", \"delegatedPermissionIds\": [\"${SCOPE_ID}\"]}]}}"
SP_ID="$(az ad sp list --filter "appId eq '${APP_ID}'" --query '[0].id' -o tsv)"
[[ -n "$SP_ID" ]] || SP_ID="$(az ad sp create --id "$APP_ID" --query id -o tsv)"

echo "==> infrastructure (infra/main.bicep)"
CORS_JSON="[]"; [[ -n "$CORS" ]] && CORS_JSON="[\"${CORS}\"]"
OUTPUTS="$(az deployment group create --resource-group "$RG" --name "dicom-$(date +%Y%m%d%H%M%S)" \
  --template-file "$ROOT/infra/main.bicep" --parameters "$ROOT/infra/main.parameters.json" \
  --parameters namePrefix="$PREFIX" apiClientId="$APP_ID" tenantId="$TENANT_ID" \
               existingFhirUrl="$FHIR_URL" corsAllowedOrigins="$CORS_JSON" \
  --query properties.outputs -o json)"
output() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1']['value'])" <<<"$OUTPUTS"; }
APP_NAME="$(output FUNCTION_APP_NAME)"
DICOMWEB="$(output DICOMWEB_BASE_URL)"
TOPIC="$(output EVENT_GRID_TOPIC_NAME)"

echo "==> code ($APP_NAME)"
PACKAGE="$(mktemp -d)/app.zip"
(cd "$ROOT" && python3 - "$PACKAGE" <<'PY'
import fnmatch, os, sys, zipfile
ignore = [l.strip().rstrip("/") for l in open(".funcignore") if l.strip() and not l.startswith("#")]
def skipped(path):
    return any(fnmatch.fnmatch(path, p) or path.split("/")[0] == p for p in ignore) or "__pycache__" in path
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for base, dirs, files in os.walk("."):
        for name in files:
            path = os.path.relpath(os.path.join(base, name), ".")
            if not skipped(path):
                z.write(path)
PY
)
az functionapp deployment source config-zip --resource-group "$RG" --name "$APP_NAME" \
  --src "$PACKAGE" --build-remote true --output none

echo "==> Event Grid subscriptions for the blob triggers"
BLOBS_KEY="$(az functionapp keys list --resource-group "$RG" --name "$APP_NAME" --query systemKeys.blobs_extension -o tsv)"
for pair in "ensure_indexed:dicom" "import_instances:dicom-import"; do
  FUNCTION="${pair%%:*}"; CONTAINER="${pair##*:}"
  az eventgrid system-topic event-subscription create --resource-group "$RG" --system-topic-name "$TOPIC" \
    --name "${FUNCTION//_/-}" --endpoint-type webhook \
    --endpoint "https://${APP_NAME}.azurewebsites.net/runtime/webhooks/blobs?functionName=Host.Functions.${FUNCTION}&code=${BLOBS_KEY}" \
    --included-event-types Microsoft.Storage.BlobCreated \
    --subject-begins-with "/blobServices/default/containers/${CONTAINER}/" --output none
done

echo "==> DICOM Data Owner for the signed-in user"
USER_ID="$(az ad signed-in-user show --query id -o tsv 2>/dev/null || true)"
if [[ -n "$USER_ID" ]]; then
  az rest --method POST --uri "https://graph.microsoft.com/v1.0/servicePrincipals/${SP_ID}/appRoleAssignedTo" \
    --headers "Content-Type=application/json" \
    --body "{\"principalId\": \"${USER_ID}\", \"resourceId\": \"${SP_ID}\", \"appRoleId\": \"${OWNER_ROLE_ID}\"}" \
    --output none 2>/dev/null || echo "   (already assigned)"
fi

cat <<DONE

DICOMweb base URL: ${DICOMWEB}
FHIR URL:          $(output FHIR_URL)

Try it (tokens can take a minute to carry a new role):
  TOKEN=\$(az account get-access-token --resource api://${APP_ID} --query accessToken -o tsv)
  curl -H "Authorization: Bearer \$TOKEN" ${DICOMWEB}/studies

Grant someone read access:  az rest --method POST \\
  --uri https://graph.microsoft.com/v1.0/servicePrincipals/${SP_ID}/appRoleAssignedTo \\
  --body '{"principalId": "<user or group object id>", "resourceId": "${SP_ID}", "appRoleId": "${READER_ROLE_ID}"}'
DONE
