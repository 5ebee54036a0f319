// The Flex Consumption function app (Python 3.11) with identity-based connections only.
@description('Azure region.')
param location string

@description('Function app name.')
param name string

@description('Resource ID of the user-assigned identity.')
param identityId string

@description('Client ID of the user-assigned identity.')
param identityClientId string

@description('Storage account of the app (host state, deployment package, DICOM data).')
param storageAccountName string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Blob service URI of the storage account.')
param blobServiceUri string

@description('Queue service URI of the storage account.')
param queueServiceUri string

@description('Cosmos DB account endpoint.')
param cosmosEndpoint string

@description('Cosmos DB database name.')
param cosmosDatabase string

@description('FHIR R4 base URL.')
param fhirUrl string

@description('Entra tenant of the API tokens.')
param tenantId string

@description('Client ID of the API app registration (token audience).')
param apiClientId string

@description('Endpoint of the Event Grid topic the DICOM events are published to (events.bicep).')
param eventsTopicEndpoint string

@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('Origins allowed by CORS.')
param corsAllowedOrigins array

@description('Most instances to scale out to (Flex Consumption: 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int

@description('Instance memory in MB (the sizes Flex Consumption offers).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

@description('Tags of every resource (the app also gets azd-service-name).')
param tags object

@description('Subnet (delegated to Microsoft.App/environments) for outbound VNet integration; empty: none.')
param virtualNetworkSubnetId string = ''

@description('Data partitions: STOW, WADO, QIDO and DELETE only at /v2/partitions/{name}/... (DICOM_DATA_PARTITIONS_ENABLED).')
param dataPartitionsEnabled bool = false

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy of Flex Consumption plans is offered in some regions only; the template deploys to any Flex region
  name: '${name}-plan'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

// Inbound stays public even with privateNetworking: DICOMweb clients (viewers) and the Event Grid webhook
// that feeds the blob triggers (/runtime/webhooks/blobs, created by deploy.sh) call the app's public
// endpoint, Entra tokens (API) and the blobs_extension system key (webhook) guard it. VNet integration is
// outbound only: the app reaches Storage, Cosmos DB and FHIR through their private endpoints.
resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the DICOMweb API and the Event Grid blob-trigger webhook must be reachable from outside (see above); every request needs an Entra token or the webhook system key
  // checkov:skip=CKV_AZURE_17: clients authenticate with Entra bearer tokens; mutual TLS would shut out DICOMweb viewers and Event Grid
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero and adds instances on demand; always-ready instances are a cost choice, not a template default
  // checkov:skip=CKV_AZURE_213: the app has no unauthenticated health route (every DICOMweb route needs an Entra token), and a probe every minute would keep scale-from-zero instances busy
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Flex Consumption: VNet integration is a site property; with it all outbound traffic goes through the
    // VNet (vnetRouteAllEnabled says so explicitly), so the privatelink DNS zones resolve the data services
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    vnetRouteAllEnabled: !empty(virtualNetworkSubnetId)
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      cors: {
        allowedOrigins: corsAllowedOrigins
        supportCredentials: false
      }
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobServiceUri}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// checkov reads every sites/config as the 'web' config; these are app settings, the web config is siteConfig above.
resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: app settings, not the web config; the app validates Entra tokens and app roles itself (DICOM_AUTH_MODE=entra), App Service Authentication would duplicate that
  // checkov:skip=CKV_AZURE_63: app settings, not the web config; HTTP logs of Flex apps go to Application Insights
  // checkov:skip=CKV_AZURE_65: app settings, not the web config; detailed error pages are an IIS (Windows) feature
  // checkov:skip=CKV_AZURE_66: app settings, not the web config; failed request tracing is an IIS (Windows) feature
  // checkov:skip=CKV_AZURE_80: app settings, not the web config; a Python app has no .NET Framework version
  // checkov:skip=CKV_AZURE_88: app settings, not the web config; Flex Consumption has no Azure Files content share
  // checkov:skip=CKV_AZURE_222: app settings, not the web config; public inbound access is intended (see the app above)
  parent: app
  name: 'appsettings'
  properties: {
    AzureWebJobsStorage__accountName: storageAccountName
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    DICOM_STORAGE__blobServiceUri: blobServiceUri
    DICOM_STORAGE__queueServiceUri: queueServiceUri
    DICOM_STORAGE__credential: 'managedidentity'
    DICOM_STORAGE__clientId: identityClientId
    AZURE_CLIENT_ID: identityClientId
    DICOM_COSMOS_ENDPOINT: cosmosEndpoint
    DICOM_COSMOS_DATABASE: cosmosDatabase
    DICOM_INSTANCE_CONTAINER: 'dicom'
    DICOM_METADATA_CONTAINER: 'dicom-metadata'
    DICOM_IMPORT_CONTAINER: 'dicom-import'
    DICOM_IMPORT_ERRORS_CONTAINER: 'dicom-import-errors'
    DICOM_FHIR_SYNC_QUEUE: 'fhir-sync'
    // published with the app identity (EventGrid Data Sender); an empty endpoint sends them to DICOM_EVENTS_QUEUE
    DICOM_EVENTS_TOPIC_ENDPOINT: eventsTopicEndpoint
    DICOM_EVENTS_QUEUE: 'dicom-events'
    DICOM_OPERATIONS_QUEUE: 'dicom-operations'
    DICOM_EXPIRY_SCHEDULE: '0 */5 * * * *'
    DICOM_DATA_PARTITIONS_ENABLED: dataPartitionsEnabled ? 'true' : 'false'
    DICOM_PUBLIC_BASE_URL: 'https://${app.properties.defaultHostName}'
    DICOM_AUTH_MODE: 'entra'
    DICOM_AUTH_TENANT_ID: tenantId
    DICOM_AUTH_AUDIENCE: 'api://${apiClientId},${apiClientId}'
    FHIR_URL: fhirUrl
    PYTHON_ENABLE_INIT_INDEXING: '1'
    FUNCTIONS_REQUEST_BODY_SIZE_LIMIT: '4294967296'
    // The host's telemetry, and the app's request spans and audit records (dicomserver/telemetry.py, audit.py):
    // the Azure Monitor distro in the worker authenticates with the identity AZURE_CLIENT_ID names.
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
