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

@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('Origins allowed by CORS.')
param corsAllowedOrigins array

@description('Most instances to scale out to.')
param maximumInstanceCount int

@description('Instance memory in MB.')
param instanceMemoryMB int

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${name}-plan'
  location: location
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
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
    siteConfig: {
      minTlsVersion: '1.2'
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

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
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
    DICOM_PUBLIC_BASE_URL: 'https://${app.properties.defaultHostName}'
    DICOM_AUTH_MODE: 'entra'
    DICOM_AUTH_TENANT_ID: tenantId
    DICOM_AUTH_AUDIENCE: 'api://${apiClientId},${apiClientId}'
    FHIR_URL: fhirUrl
    PYTHON_ENABLE_INIT_INDEXING: '1'
    FUNCTIONS_REQUEST_BODY_SIZE_LIMIT: '4294967296'
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
