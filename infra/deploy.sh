#!/usr/bin/env bash
# shellcheck shell=bash
# One-command deployment of the DICOM service into Azure with the az CLI (bash 3.2+, Linux or macOS).
#
#   infra/deploy.sh --resource-group RG --location westeurope --name-prefix dicomsvc
#       [--subscription SUB] [--existing-fhir-url URL [--existing-fhir-resource-id ID]]
#       [--cors-origin https://viewer.example.org] [--app-id APP_ID] [--private-networking]
#       [--storage-sku Standard_GRS] [--import-uploader OBJECT_ID ...] [--dry-run]
#
#   --name-prefix      3-11 lowercase letters and digits, starting with a letter: it is part of every
#                      resource name, and the storage account and the Health Data Services workspace
#                      take lowercase letters and digits only
#   --existing-fhir-url  use this FHIR R4 service instead of creating one; the app's identity gets FHIR
#                      Data Contributor on it (resource id looked up from the URL in the subscription,
#                      or given with --existing-fhir-resource-id)
#   --app-id           the app registration to use (default: the one named exactly <prefix>-dicomweb)
#   --private-networking, --storage-sku, --import-uploader (repeatable): main.bicep's privateNetworking,
#                      storageSkuName and importUploaderPrincipalIds (its defaults when not given)
#   --dry-run          print every az (and other external) command instead of running it; values that
#                      would come from Azure are shown as <dry-run:...> placeholders
#   --phase P --azd    what the azd hooks of azure.yaml run: P is preprovision, postprovision or
#                      postdeploy, and --azd takes the settings from the azd environment
#
# Creates or reuses: the resource group; the Entra app registration exposing the DICOMweb API with
# the app roles "DICOM Data Owner" (DICOM.Data.Owner) and "DICOM Data Reader" (DICOM.Data.Reader);
# everything in infra/main.bicep; FHIR Data Contributor on an existing FHIR service; the code (zip
# deploy with remote build); the Event Grid subscriptions that feed the blob triggers; and DICOM Data
# Owner for the signed-in user. Safe to rerun. Remove everything with: az group delete --name RG --yes
# (the app registration stays; delete it with az ad app delete --id <appId> if you want).
set -euo pipefail

# Resource names built from the prefix in infra/main.bicep (suffix: uniqueString(), 13 characters):
#   storage account take('<prefix>st<suffix>', 24) and Health Data Services workspace
#   take('<prefix>ws<suffix>', 24): 3-24 lowercase letters and digits (the workspace starts with a
#   letter); function app '<prefix>-dicom-<suffix>' (2-60, no leading hyphen); Cosmos DB
#   '<prefix>-cosmos-<suffix>' (3-44, lowercase); identity, Log Analytics, Event Grid topic: hyphens allowed.
# main.bicep's @minLength/@maxLength of namePrefix must stay equal to these (tests/unit/test_deploy_script.py).
NAME_PREFIX_MIN=3
NAME_PREFIX_MAX=11
NAME_PREFIX_RULE="${NAME_PREFIX_MIN}-${NAME_PREFIX_MAX} characters, lowercase letters a-z and digits 0-9, starting with a letter (no capitals, hyphens or underscores)"

FHIR_DATA_CONTRIBUTOR="5a1fc7df-4bf1-4951-a576-89034ee01acd"
AZURE_CLI_APP_ID="04b07795-8ddb-461a-bbee-02f9e1bf7b46"   # lets `az account get-access-token` get API tokens
BLOB_TRIGGERS="ensure_indexed:dicom import_instances:dicom-import"   # function:container
# Bounded waits (attempts x seconds): role assignments and the Flex Consumption host take minutes.
# DEPLOY_SH_RETRY_DELAY replaces every delay (the tests set 0).
ZIP_DEPLOY_ATTEMPTS=5 ZIP_DEPLOY_DELAY="${DEPLOY_SH_RETRY_DELAY:-60}"
HEALTH_ATTEMPTS=40 HEALTH_DELAY="${DEPLOY_SH_RETRY_DELAY:-15}"
BLOBS_KEY_ATTEMPTS=20 BLOBS_KEY_DELAY="${DEPLOY_SH_RETRY_DELAY:-15}"
SUBSCRIPTION_ATTEMPTS=10 SUBSCRIPTION_DELAY="${DEPLOY_SH_RETRY_DELAY:-30}"
ROLE_ATTEMPTS=6 ROLE_DELAY="${DEPLOY_SH_RETRY_DELAY:-20}"

ROOT="$(cd "$(dirname "$0")/.." && pwd)"

# ---------------------------------------------------------------------------------------------------
# Output, dry run and retries
# ---------------------------------------------------------------------------------------------------
exec 3>&1   # progress and dry-run lines: the script's stdout, even from inside $(...)

log() { printf '%s\n' "$*" >&3; }
outcome() { dry_run || log "$@"; }   # what a step did (nothing to say in a dry run)
die() { printf 'deploy.sh: error: %s\n' "$*" >&2; exit 1; }
invalid() { printf 'deploy.sh: error: %s\n' "$*" >&2; exit 2; }   # bad arguments, found before any az command
usage() { awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit "${1:-0}"; }
usage_error() { printf 'deploy.sh: %s\n\n' "$*" >&2; usage 2 >&2; }
dry_run() { [[ "$DRY_RUN" == 1 ]]; }

# One argument as it would be typed in a shell (for the dry-run listing).
shell_word() {
  local safe='^[A-Za-z0-9_@%+=:,./-]+$' unsafe_in_double_quotes='["$`\\!]'
  if [[ "$1" =~ $safe ]]; then
    printf '%s' "$1"
  elif [[ ! "$1" =~ $unsafe_in_double_quotes ]]; then
    printf '"%s"' "$1"
  else
    local quote="'\\''"
    printf "'%s'" "${1//\'/$quote}"
  fi
}

show_command() {
  local line="+" arg
  for arg in "$@"; do line="$line $(shell_word "$arg")"; done
  log "$line"
}

# run CMD...: runs CMD; in a dry run prints it instead.
run() {
  if dry_run; then show_command "$@"; return 0; fi
  "$@"
}

# capture PLACEHOLDER CMD...: CMD's output (a value from Azure); in a dry run prints CMD and PLACEHOLDER
# stands in for the value. lookup CMD... is the same for "find the existing X" queries: in a dry run they
# find nothing, so the listing shows what a first deployment creates.
capture() {
  local placeholder="$1"; shift
  if dry_run; then show_command "$@"; printf '%s\n' "$placeholder"; return 0; fi
  "$@"
}
lookup() { capture "" "$@"; }
find_value() {   # find_value capture|lookup PLACEHOLDER CMD...
  local how="$1" placeholder="$2"; shift 2
  if [[ "$how" == lookup ]]; then lookup "$@"; else capture "$placeholder" "$@"; fi
}

# run_checked CMD...: runs CMD with its stderr kept in LAST_ERROR (echoed on failure by the caller).
LAST_ERROR=""
run_checked() {
  LAST_ERROR=""
  if dry_run; then show_command "$@"; return 0; fi
  local errors status=0
  errors="$(mktemp)"
  "$@" 2>"$errors" || status=$?
  LAST_ERROR="$(cat "$errors")"
  rm -f "$errors"
  return "$status"
}

# retry ATTEMPTS DELAY WHAT CMD...: runs CMD until it succeeds, at most ATTEMPTS times, DELAY s apart.
retry() {
  local attempts="$1" delay="$2" what="$3" attempt=1
  shift 3
  until "$@"; do
    if (( attempt >= attempts )); then
      printf 'deploy.sh: %s: still failing after %d attempts (%ds apart)\n' "$what" "$attempts" "$delay" >&2
      return 1
    fi
    log "   ${what}: not ready yet (attempt ${attempt}/${attempts}), retrying in ${delay}s"
    sleep "$delay"
    attempt=$((attempt + 1))
  done
}

# A random UUID on Linux and macOS alike (macOS has no /proc).
new_uuid() {
  if command -v uuidgen >/dev/null 2>&1; then
    uuidgen | tr '[:upper:]' '[:lower:]'
  else
    python3 -c 'import uuid; print(uuid.uuid4())'
  fi
}

# ---------------------------------------------------------------------------------------------------
# Validation (before any az command)
# ---------------------------------------------------------------------------------------------------
validate_name_prefix() {
  local prefix="$1" pattern='^[a-z][a-z0-9]*$'
  if [[ ! "$prefix" =~ $pattern ]] || (( ${#prefix} < NAME_PREFIX_MIN || ${#prefix} > NAME_PREFIX_MAX )); then
    invalid "invalid name prefix '${prefix}': use ${NAME_PREFIX_RULE}. It starts every resource name, and the storage account <prefix>st<suffix> and the Health Data Services workspace <prefix>ws<suffix> may hold only lowercase letters and digits (3-24, cut to 24). Nothing was created."
  fi
}

# azd environment names allow capitals and hyphens: keep the letters and digits, lowercased.
prefix_from_env_name() {
  printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9' | cut -c "1-${NAME_PREFIX_MAX}"
}

validate_inputs() {
  local rg_pattern='^[-A-Za-z0-9._()]{1,90}$' location_pattern='^[A-Za-z0-9 ]+$'
  local url_pattern='^https://[^/?#[:space:]]+(/[^?#[:space:]]*)?$'
  local origin_pattern='^https?://[^/?#[:space:]]+$'
  local resource_id_pattern='^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.HealthcareApis/'
  [[ -z "$PREFIX" ]] || validate_name_prefix "$PREFIX"
  if [[ -n "$RG" ]] && { [[ ! "$RG" =~ $rg_pattern ]] || [[ "$RG" == *. ]]; }; then
    invalid "invalid resource group name '${RG}': 1-90 letters, digits, '-', '_', '.', '(' or ')', not ending with '.'"
  fi
  [[ -z "$LOCATION" || "$LOCATION" =~ $location_pattern ]] || invalid "invalid location '${LOCATION}' (e.g. westeurope)"
  [[ -z "$EXT_FHIR_URL" || "$EXT_FHIR_URL" =~ $url_pattern ]] || invalid "invalid --existing-fhir-url '${EXT_FHIR_URL}': an https:// FHIR base URL"
  [[ -z "$EXT_FHIR_ID" || "$EXT_FHIR_ID" =~ $resource_id_pattern ]] \
    || invalid "invalid --existing-fhir-resource-id '${EXT_FHIR_ID}': /subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.HealthcareApis/..."
  [[ -z "$EXT_FHIR_ID" || -n "$EXT_FHIR_URL" ]] || invalid "--existing-fhir-resource-id needs --existing-fhir-url"
  [[ -z "$CORS" || "$CORS" =~ $origin_pattern ]] || invalid "invalid --cors-origin '${CORS}': an origin such as https://viewer.example.org (no path)"
  local guid='^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$' sku='^Standard_[A-Z]+$' id
  for id in $IMPORT_UPLOADERS; do
    [[ "$id" =~ $guid ]] || invalid "invalid --import-uploader '${id}': the object id (a GUID) of a user, group or service principal"
  done
  [[ -z "$STORAGE_SKU" || "$STORAGE_SKU" =~ $sku ]] || invalid "invalid --storage-sku '${STORAGE_SKU}' (e.g. Standard_GRS, Standard_ZRS)"
  return 0
}

# ---------------------------------------------------------------------------------------------------
# Azure steps
# ---------------------------------------------------------------------------------------------------
select_subscription() {
  [[ -z "$SUBSCRIPTION" ]] || run az account set --subscription "$SUBSCRIPTION"
  TENANT_ID="$(capture '<dry-run:tenantId>' az account show --query tenantId -o tsv)"
}

# The FHIR service's resource id, from --existing-fhir-resource-id or looked up from its URL:
# https://<workspace>-<service>.fhir.azurehealthcareapis.com (Health Data Services) or
# https://<service>.azurehealthcareapis.com (Azure API for FHIR).
resolve_fhir_resource_id() {
  [[ -n "$EXT_FHIR_URL" && -z "$EXT_FHIR_ID" ]] || return 0
  local host type name
  host="${EXT_FHIR_URL#https://}"; host="${host%%/*}"; host="${host%%:*}"
  host="$(printf '%s' "$host" | tr '[:upper:]' '[:lower:]')"
  case "$host" in
    *-*.fhir.azurehealthcareapis.com)
      name="${host%.fhir.azurehealthcareapis.com}"
      type="Microsoft.HealthcareApis/workspaces/fhirservices"; name="${name%%-*}/${name#*-}" ;;
    *.azurehealthcareapis.com)
      type="Microsoft.HealthcareApis/services"; name="${host%%.*}" ;;
    *)
      die "cannot tell which Azure resource serves ${EXT_FHIR_URL}: pass --existing-fhir-resource-id (the FHIR service's resource id) so its identity can be granted FHIR Data Contributor" ;;
  esac
  log "==> FHIR service of ${EXT_FHIR_URL}"
  EXT_FHIR_ID="$(capture '<dry-run:fhirResourceId>' az resource list --resource-type "$type" \
    --query "[?name=='${name}'].id | [0]" -o tsv)"
  [[ -n "$EXT_FHIR_ID" ]] || die "no ${type} named '${name}' in the current subscription for ${EXT_FHIR_URL}: pass --existing-fhir-resource-id (or --subscription); without FHIR Data Contributor on it every FHIR sync would be refused"
}

# Sets APP_OBJECT_ID, SP_ID, OWNER_ROLE_ID, READER_ROLE_ID, SCOPE_ID of the app registration APP_ID.
# "new": a dry run shows a first deployment (no roles, scope or service principal yet);
# "existing": a dry run assumes the preprovision step made them.
load_app_registration() {
  local find=capture owner='<dry-run:ownerRoleId>' reader='<dry-run:readerRoleId>' scope='<dry-run:scopeId>'
  local sp='<dry-run:servicePrincipalId>'
  if [[ "$1" == new ]]; then find=lookup owner="" reader="" scope="" sp=""; fi
  APP_OBJECT_ID="$(capture '<dry-run:appObjectId>' az ad app show --id "$APP_ID" --query id -o tsv)"
  OWNER_ROLE_ID="$(find_value "$find" "$owner" az ad app show --id "$APP_ID" --query "appRoles[?value=='DICOM.Data.Owner'].id | [0]" -o tsv)"
  READER_ROLE_ID="$(find_value "$find" "$reader" az ad app show --id "$APP_ID" --query "appRoles[?value=='DICOM.Data.Reader'].id | [0]" -o tsv)"
  SCOPE_ID="$(find_value "$find" "$scope" az ad app show --id "$APP_ID" --query "api.oauth2PermissionScopes[?value=='user_impersonation'].id | [0]" -o tsv)"
  SP_ID="$(find_value "$find" "$sp" az ad sp list --filter "appId eq '${APP_ID}'" --query '[0].id' -o tsv)"
}

ensure_app_registration() {
  local display="${PREFIX}-dicomweb" found count body
  log "==> Entra app registration ${display}"
  if [[ -z "$APP_ID" ]]; then
    # Exact match: --display-name would also match "<display>-test" and friends (prefix search).
    found="$(lookup az ad app list --filter "displayName eq '${display}'" --query '[].appId' -o tsv)"
    count="$(printf '%s' "$found" | grep -c . || true)"
    if (( count > 1 )); then
      die "${count} app registrations are named exactly '${display}' ($(printf '%s' "$found" | tr '\n' ' ')): pass --app-id to choose one"
    fi
    APP_ID="$found"
  fi
  if [[ -z "$APP_ID" ]]; then
    APP_ID="$(capture '<dry-run:appId>' az ad app create --display-name "$display" \
      --sign-in-audience AzureADMyOrg --query appId -o tsv)"
  fi
  load_app_registration new
  OWNER_ROLE_ID="${OWNER_ROLE_ID:-$(new_uuid)}"
  READER_ROLE_ID="${READER_ROLE_ID:-$(new_uuid)}"
  SCOPE_ID="${SCOPE_ID:-$(new_uuid)}"
  # Scope and roles first, then pre-authorize the Azure CLI for the scope (Graph wants them in two steps).
  body="$(tr -s '\n ' '  ' <<JSON
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
  run az rest --method PATCH --uri "https://graph.microsoft.com/v1.0/applications/${APP_OBJECT_ID}" \
    --headers "Content-Type=application/json" --body "$body"
  run az rest --method PATCH --uri "https://graph.microsoft.com/v1.0/applications/${APP_OBJECT_ID}" \
    --headers "Content-Type=application/json" \
    --body "{\"api\": {\"preAuthorizedApplications\": [{\"appId\": \"${AZURE_CLI_APP_ID}\", \"delegatedPermissionIds\": [\"${SCOPE_ID}\"]}]}}"
  if [[ -z "$SP_ID" ]]; then
    SP_ID="$(capture '<dry-run:servicePrincipalId>' az ad sp create --id "$APP_ID" --query id -o tsv)"
  fi
}

# deployment_output NAME [optional]: an output of the deployment (azd mode: of the azd environment,
# where azd puts them). In a dry run a missing one is a placeholder, unless optional and not an output
# of main.bicep (deploy.sh) or not in the environment (azd).
OUTPUTS=""   # NAME<tab>value lines
deployment_output() {
  local line tab=$'\t'
  if (( AZD )); then
    local value="${!1:-}"
    if [[ -z "$value" && "${2:-}" != optional ]] && dry_run; then value="<dry-run:$1>"; fi
    printf '%s\n' "$value"
  elif dry_run; then
    if [[ "${2:-}" == optional ]] && ! grep -q "^output $1 " "$ROOT/infra/main.bicep"; then
      printf '\n'
    else
      printf '<dry-run:%s>\n' "$1"
    fi
  else
    while IFS= read -r line; do
      if [[ "${line%%"$tab"*}" == "$1" ]]; then printf '%s\n' "${line#*"$tab"}"; return 0; fi
    done <<<"$OUTPUTS"
    printf '\n'
  fi
}

require_output() {
  local value
  value="$(deployment_output "$1")"
  [[ -n "$value" ]] || die "the deployment has no output $1$( (( AZD )) && printf ' in the azd environment (azd env get-values): run azd provision first')"
  printf '%s\n' "$value"
}

deploy_infrastructure() {
  local cors_json="[]" errors status=0 extra=() id ids=""
  [[ -z "$CORS" ]] || cors_json="[\"${CORS}\"]"
  [[ -z "$OPT_PRIVATE_NETWORKING" ]] || extra+=("privateNetworking=true")
  [[ -z "$STORAGE_SKU" ]] || extra+=("storageSkuName=${STORAGE_SKU}")
  if [[ -n "$IMPORT_UPLOADERS" ]]; then
    for id in $IMPORT_UPLOADERS; do ids="${ids:+$ids, }\"${id}\""; done
    extra+=("importUploaderPrincipalIds=[${ids}]")
  fi
  log "==> infrastructure (infra/main.bicep; this takes several minutes)"
  set -- az deployment group create --resource-group "$RG" --name "dicom-$(date +%Y%m%d%H%M%S)" \
    --template-file "$ROOT/infra/main.bicep" \
    --parameters namePrefix="$PREFIX" apiClientId="$APP_ID" tenantId="$TENANT_ID" \
                 existingFhirUrl="$EXT_FHIR_URL" corsAllowedOrigins="$cors_json" ${extra[@]+"${extra[@]}"} \
    --query properties.outputs -o json
  if dry_run; then show_command "$@"; return 0; fi
  errors="$(mktemp)"
  OUTPUTS="$("$@" 2>"$errors" | python3 -c 'import json, sys
text = sys.stdin.read()
for name, output in ((json.loads(text) if text.strip() else None) or {}).items():
    print(name, (output or {}).get("value", ""), sep="\t")')" || status=$?
  cat "$errors" >&2
  if (( status != 0 )); then
    if grep -q 'Microsoft.Authorization/roleAssignments/write' "$errors"; then
      rm -f "$errors"
      die "the deployment could not create the role assignments of infra/modules/roles.bicep (storage, Application Insights, FHIR) on resource group ${RG}: the signed-in account needs Owner or User Access Administrator (or Role Based Access Control Administrator) on it"
    fi
    rm -f "$errors"
    die "the deployment of infra/main.bicep into ${RG} failed (see above)"
  fi
  rm -f "$errors"
}

# assign_azure_role PRINCIPAL_ID ROLE_ID ROLE_NAME SCOPE: an Azure RBAC role for a service principal.
assign_azure_role() {
  local principal="$1" role="$2" role_name="$3" scope="$4" attempt=1
  while true; do
    if run_checked az role assignment create --assignee-object-id "$principal" \
        --assignee-principal-type ServicePrincipal --role "$role" --scope "$scope" --output none; then
      outcome "   ${role_name}: granted"; return 0
    fi
    case "$LAST_ERROR" in
      *RoleAssignmentExists*|*"role assignment already exists"*)
        outcome "   ${role_name}: already assigned"; return 0 ;;
      *PrincipalNotFound*)   # a new identity takes a moment to reach Entra's replicas
        if (( attempt >= ROLE_ATTEMPTS )); then
          die "cannot grant ${role_name} on ${scope}: principal ${principal} still not found after ${ROLE_ATTEMPTS} attempts: ${LAST_ERROR}"
        fi
        log "   ${role_name}: identity not replicated yet, retrying in ${ROLE_DELAY}s"
        sleep "$ROLE_DELAY"; attempt=$((attempt + 1)) ;;
      *)
        die "cannot grant ${role_name} (${role}) to principal ${principal} on ${scope}: ${LAST_ERROR:-az role assignment create failed}. The signed-in account needs Owner or User Access Administrator (or Role Based Access Control Administrator) on that scope; ask one to run: az role assignment create --assignee-object-id ${principal} --assignee-principal-type ServicePrincipal --role ${role} --scope ${scope}" ;;
    esac
  done
}

grant_fhir_contributor() {
  [[ -n "$EXT_FHIR_URL" ]] || return 0   # a FHIR service created by main.bicep gets the role in roles.bicep
  local principal client_id
  log "==> FHIR Data Contributor on ${EXT_FHIR_URL} for the app's identity"
  principal="$(deployment_output IDENTITY_PRINCIPAL_ID optional)"
  if [[ -z "$principal" ]]; then
    client_id="$(require_output AZURE_CLIENT_ID)"
    principal="$(capture '<dry-run:identityPrincipalId>' az identity list --resource-group "$RG" \
      --query "[?clientId=='${client_id}'].principalId | [0]" -o tsv)"
    [[ -n "$principal" ]] || die "no managed identity with client id ${client_id} in ${RG}"
  fi
  assign_azure_role "$principal" "$FHIR_DATA_CONTRIBUTOR" "FHIR Data Contributor" "$EXT_FHIR_ID"
}

build_package() {
  local package="$1"
  if dry_run; then
    show_command python3 - "$package"
    log "  (zips the repository minus .funcignore, with the inline python3 script of build_package)"
    return 0
  fi
  (cd "$ROOT" && python3 - "$package" <<'PY'
import fnmatch, os, sys, zipfile
ignore = [l.strip().rstrip("/") for l in open(".funcignore") if l.strip() and not l.startswith("#")]
def skipped(path):
    return any(fnmatch.fnmatch(path, p) or path.split("/")[0] == p for p in ignore) or "__pycache__" in path
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for base, dirs, files in os.walk("."):
        dirs[:] = [d for d in dirs if not skipped(os.path.relpath(os.path.join(base, d), "."))]
        for name in files:
            path = os.path.relpath(os.path.join(base, name), ".")
            if not skipped(path):
                z.write(path)
PY
  )
}

deploy_code() {
  local package workdir
  log "==> code (${APP_NAME})"
  if dry_run; then workdir="<dry-run:tmpdir>"; else workdir="$(mktemp -d)"; fi
  package="${workdir}/app.zip"
  build_package "$package"
  # The first attempts can fail while the identity's storage role (deployment container) propagates.
  retry "$ZIP_DEPLOY_ATTEMPTS" "$ZIP_DEPLOY_DELAY" "zip deploy to ${APP_NAME}" \
    run az functionapp deployment source config-zip --resource-group "$RG" --name "$APP_NAME" \
      --src "$package" --build-remote true --output none \
    || die "the zip deploy to ${APP_NAME} kept failing; check that the deployment has finished and rerun"
  dry_run || rm -rf "$workdir"
}

functions_indexed() {
  local names pair
  names="$(capture "<dry-run:functionNames>" az functionapp function list --resource-group "$RG" \
    --name "$APP_NAME" --query '[].name' -o tsv 2>/dev/null)" || return 1
  dry_run && return 0
  for pair in $BLOB_TRIGGERS; do
    printf '%s\n' "$names" | grep -q "/${pair%%:*}\$" || return 1
  done
}

http_answers() {
  local code
  command -v curl >/dev/null 2>&1 || dry_run || return 0   # no curl: the function list has to do
  code="$(capture 401 curl -s -o /dev/null -w '%{http_code}' --max-time 30 "https://${HOST_NAME}/v2/studies")" || return 1
  [[ "$code" == 200 || "$code" == 401 || "$code" == 403 ]]   # the app answered (401: it wants a token)
}

app_healthy() { functions_indexed && http_answers; }

blobs_key_present() {
  BLOBS_KEY="$(capture '<dry-run:blobs_extension-key>' az functionapp keys list --resource-group "$RG" \
    --name "$APP_NAME" --query systemKeys.blobs_extension -o tsv)" || return 1
  [[ -n "$BLOBS_KEY" && "$BLOBS_KEY" != None ]]
}

wait_until_healthy() {
  log "==> waiting for ${APP_NAME} (https://${HOST_NAME}) to start"
  retry "$HEALTH_ATTEMPTS" "$HEALTH_DELAY" "${APP_NAME} listing its blob triggers and answering HTTP" app_healthy \
    || die "${APP_NAME} did not start (no ensure_indexed/import_instances functions, or no HTTP answer) within $((HEALTH_ATTEMPTS * HEALTH_DELAY))s; check its logs in Application Insights, then rerun (the script is idempotent)"
}

# create_subscription NAME CONTAINER ENDPOINT: az's errors are shown without the webhook's key. Events
# Event Grid cannot deliver go to the dead-letter container of eventgrid.bicep, written with the topic's
# system-assigned identity.
create_subscription() {
  local deadletter=()
  if [[ -n "$DEADLETTER_ENDPOINT" ]]; then
    deadletter=(--deadletter-identity systemassigned --deadletter-identity-endpoint "$DEADLETTER_ENDPOINT")
  fi
  if run_checked az eventgrid system-topic event-subscription create --resource-group "$RG" \
      --system-topic-name "$TOPIC" --name "$1" --endpoint-type webhook --endpoint "$3" \
      --included-event-types Microsoft.Storage.BlobCreated \
      --subject-begins-with "/blobServices/default/containers/$2/" ${deadletter[@]+"${deadletter[@]}"} \
      --output none; then
    return 0
  fi
  printf '%s\n' "$LAST_ERROR" | sed -E "s/code=[^&[:space:]\"']+/code=<redacted>/g" >&2
  return 1
}

subscribe_blob_triggers() {
  local pair function container endpoint
  log "==> Event Grid subscriptions for the blob triggers"
  BLOBS_KEY=""
  retry "$BLOBS_KEY_ATTEMPTS" "$BLOBS_KEY_DELAY" "the blobs_extension system key of ${APP_NAME}" blobs_key_present \
    || die "${APP_NAME} has no blobs_extension system key (it appears once the host runs the EventGrid blob triggers): no webhook subscription was made; check the app's logs, then rerun"
  for pair in $BLOB_TRIGGERS; do
    function="${pair%%:*}"; container="${pair##*:}"
    endpoint="https://${HOST_NAME}/runtime/webhooks/blobs?functionName=Host.Functions.${function}&code=${BLOBS_KEY}"
    # Creation validates the webhook: it fails until the host answers, hence the retries.
    retry "$SUBSCRIPTION_ATTEMPTS" "$SUBSCRIPTION_DELAY" "Event Grid subscription ${function//_/-}" \
      create_subscription "${function//_/-}" "$container" "$endpoint" \
      || die "could not subscribe ${function} to ${TOPIC}: blobs written to ${container} would never be indexed; rerun once the app answers at https://${HOST_NAME}"
  done
}

grant_signed_in_user() {
  local user_id
  log "==> DICOM Data Owner for the signed-in user"
  user_id="$(capture '<dry-run:signedInUserObjectId>' az ad signed-in-user show --query id -o tsv 2>/dev/null || true)"
  if [[ -z "$user_id" ]]; then
    log "   signed in as a service principal: grant the app roles to people (az rest line in the summary)"
    return 0
  fi
  [[ -n "$SP_ID" && -n "$OWNER_ROLE_ID" ]] || die "the app registration ${APP_ID} has no service principal or no DICOM.Data.Owner role: rerun the app registration step"
  if run_checked az rest --method POST --uri "https://graph.microsoft.com/v1.0/servicePrincipals/${SP_ID}/appRoleAssignedTo" \
      --headers "Content-Type=application/json" \
      --body "{\"principalId\": \"${user_id}\", \"resourceId\": \"${SP_ID}\", \"appRoleId\": \"${OWNER_ROLE_ID}\"}" \
      --output none; then
    outcome "   granted"
  elif [[ "$LAST_ERROR" == *"already exists"* ]]; then
    outcome "   already assigned"
  else
    die "cannot grant the app role DICOM Data Owner of the enterprise application ${PREFIX:-}-dicomweb (service principal ${SP_ID}) to user ${user_id}: ${LAST_ERROR:-az rest failed}. The signed-in account must own that enterprise application or hold the Entra role Application Administrator or Cloud Application Administrator."
  fi
}

print_summary() {
  local dicomweb fhir
  dicomweb="$(deployment_output DICOMWEB_BASE_URL)"; dicomweb="${dicomweb:-https://${HOST_NAME}/v2}"
  fhir="$(deployment_output FHIR_URL)"
  cat >&3 <<DONE

DICOMweb base URL: ${dicomweb}
FHIR URL:          ${fhir:-$EXT_FHIR_URL}

Try it (tokens can take a minute to carry a new role):
  TOKEN=\$(az account get-access-token --resource api://${APP_ID} --query accessToken -o tsv)
  curl -H "Authorization: Bearer \$TOKEN" ${dicomweb}/studies

Grant someone read access:  az rest --method POST \\
  --uri https://graph.microsoft.com/v1.0/servicePrincipals/${SP_ID}/appRoleAssignedTo \\
  --body '{"principalId": "<user or group object id>", "resourceId": "${SP_ID}", "appRoleId": "${READER_ROLE_ID}"}'
DONE
  # DICOM events (DicomImageCreated/Updated/Deleted): subscribers bring their own event subscription
  local events_topic events_deadletter
  events_topic="$(deployment_output DICOM_EVENTS_TOPIC_ID optional)"
  events_deadletter="$(deployment_output DICOM_EVENTS_DEADLETTER_ENDPOINT optional)"
  [[ -n "$events_topic" ]] || return 0
  cat >&3 <<DONE

Subscribe to the DICOM events (dead letters go to the dicom-events-deadletter container):
  az eventgrid event-subscription create --name <name> --source-resource-id ${events_topic} \\
    --endpoint <subscriber endpoint> --deadletter-identity systemassigned \\
    --deadletter-identity-endpoint ${events_deadletter}
DONE
}

# Sets APP_NAME, TOPIC and HOST_NAME (the function app's defaultHostName: Flex Consumption apps may get
# a regional unique host name, so never <app>.azurewebsites.net by hand).
read_app_outputs() {
  local base_url
  APP_NAME="$(require_output FUNCTION_APP_NAME)"
  TOPIC="$(require_output EVENT_GRID_TOPIC_NAME)"
  DEADLETTER_ENDPOINT="$(deployment_output EVENT_GRID_DEADLETTER_ENDPOINT optional)"
  HOST_NAME="$(deployment_output FUNCTION_APP_HOST_NAME optional)"
  if [[ -z "$HOST_NAME" ]]; then   # templates without that output: DICOMWEB_BASE_URL is https://<defaultHostName>/v2
    base_url="$(deployment_output DICOMWEB_BASE_URL)"
    HOST_NAME="${base_url#https://}"; HOST_NAME="${HOST_NAME%%/*}"
  fi
  if [[ -z "$HOST_NAME" ]]; then
    HOST_NAME="$(capture '<dry-run:defaultHostName>' az functionapp show --resource-group "$RG" --name "$APP_NAME" \
      --query defaultHostName -o tsv)"
  fi
  [[ -n "$HOST_NAME" ]] || die "cannot find the host name of ${APP_NAME}"
}

# ---------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------
RG="" LOCATION="" PREFIX="" SUBSCRIPTION="" EXT_FHIR_URL="" EXT_FHIR_ID="" CORS="" APP_ID=""
OPT_PRIVATE_NETWORKING="" STORAGE_SKU="" IMPORT_UPLOADERS="" DEADLETTER_ENDPOINT=""
DRY_RUN=0 AZD=0 PHASE=all
TENANT_ID="" APP_OBJECT_ID="" SP_ID="" OWNER_ROLE_ID="" READER_ROLE_ID="" SCOPE_ID=""
APP_NAME="" TOPIC="" HOST_NAME="" BLOBS_KEY=""
need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || usage_error "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1; shift ;;
    --azd) AZD=1; shift ;;
    -h|--help) usage 0 ;;
    --resource-group) need_value "$@"; RG="$2"; shift 2 ;;
    --location) need_value "$@"; LOCATION="$2"; shift 2 ;;
    --name-prefix) need_value "$@"; PREFIX="$2"; shift 2 ;;
    --subscription) need_value "$@"; SUBSCRIPTION="$2"; shift 2 ;;
    --existing-fhir-url) need_value "$@"; EXT_FHIR_URL="$2"; shift 2 ;;
    --existing-fhir-resource-id) need_value "$@"; EXT_FHIR_ID="$2"; shift 2 ;;
    --cors-origin) need_value "$@"; CORS="$2"; shift 2 ;;
    --app-id) need_value "$@"; APP_ID="$2"; shift 2 ;;
    --private-networking) OPT_PRIVATE_NETWORKING=1; shift ;;
    --storage-sku) need_value "$@"; STORAGE_SKU="$2"; shift 2 ;;
    --import-uploader) need_value "$@"; IMPORT_UPLOADERS="${IMPORT_UPLOADERS:+$IMPORT_UPLOADERS }$2"; shift 2 ;;
    --phase) need_value "$@"; PHASE="$2"; shift 2 ;;
    *) usage_error "unknown argument: $1" ;;
  esac
done
if (( AZD )); then   # the azd environment (azure.yaml hooks); flags still win
  RG="${RG:-${AZURE_RESOURCE_GROUP:-}}"
  LOCATION="${LOCATION:-${AZURE_LOCATION:-}}"
  SUBSCRIPTION="${SUBSCRIPTION:-${AZURE_SUBSCRIPTION_ID:-}}"
  EXT_FHIR_URL="${EXT_FHIR_URL:-${EXISTING_FHIR_URL:-}}"
  EXT_FHIR_ID="${EXT_FHIR_ID:-${EXISTING_FHIR_RESOURCE_ID:-}}"
  APP_ID="${APP_ID:-${API_CLIENT_ID:-}}"
  if [[ -z "$PREFIX" ]]; then PREFIX="${NAME_PREFIX:-$(prefix_from_env_name "${AZURE_ENV_NAME:-}")}"; fi
fi
case "$PHASE" in
  all) [[ -n "$RG" && -n "$LOCATION" && -n "$PREFIX" ]] || usage_error "--resource-group, --location and --name-prefix are required" ;;
  preprovision) [[ -n "$PREFIX" ]] || usage_error "preprovision needs --name-prefix (azd: NAME_PREFIX or AZURE_ENV_NAME)" ;;
  postprovision|postdeploy)
    [[ -n "$RG" ]] || usage_error "$PHASE needs --resource-group (azd: AZURE_RESOURCE_GROUP)"
    [[ -n "$APP_ID" ]] || usage_error "$PHASE needs --app-id (azd: API_CLIENT_ID, set by the preprovision hook)" ;;
  *) usage_error "unknown --phase '$PHASE' (all, preprovision, postprovision or postdeploy)" ;;
esac
validate_inputs
if ! dry_run; then
  command -v az >/dev/null 2>&1 || die "the az CLI is required (https://aka.ms/azure-cli), signed in with az login"
  command -v python3 >/dev/null 2>&1 || die "python3 is required (it builds the zip and reads the deployment outputs)"
fi
if dry_run; then log "# dry run: nothing below is executed; <dry-run:...> stands for a value Azure would return"; fi

# ---------------------------------------------------------------------------------------------------
# Phases: all (deploy.sh alone), or one azd hook at a time
# ---------------------------------------------------------------------------------------------------
select_subscription
# An unknown FHIR service fails here, before anything is created.
[[ "$PHASE" == postdeploy ]] || resolve_fhir_resource_id
case "$PHASE" in
  all)
    log "==> resource group ${RG} (${LOCATION})"
    run az group create --name "$RG" --location "$LOCATION" --output none
    ensure_app_registration
    deploy_infrastructure
    read_app_outputs
    grant_fhir_contributor
    deploy_code
    wait_until_healthy
    subscribe_blob_triggers
    grant_signed_in_user
    print_summary ;;
  preprovision)
    ensure_app_registration
    if (( AZD )); then
      run azd env set NAME_PREFIX "$PREFIX"
      run azd env set API_CLIENT_ID "$APP_ID"
      [[ -z "$EXT_FHIR_ID" ]] || run azd env set EXISTING_FHIR_RESOURCE_ID "$EXT_FHIR_ID"
    fi ;;
  postprovision)
    load_app_registration existing
    grant_fhir_contributor
    grant_signed_in_user ;;
  postdeploy)
    load_app_registration existing
    read_app_outputs
    wait_until_healthy
    subscribe_blob_triggers
    print_summary ;;
esac
