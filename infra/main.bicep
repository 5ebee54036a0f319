// DICOM service on Azure Functions (Flex Consumption) with Blob Storage, Cosmos DB and a FHIR R4
// service in an Azure Health Data Services workspace. main.bicep only composes the modules.
targetScope = 'resourceGroup'

@description('Azure region of every resource.')
param location string = resourceGroup().location

@description('Short lowercase prefix for resource names (3-11 letters or digits).')
@minLength(3)
@maxLength(11)
param namePrefix string

@description('Entra tenant whose tokens the DICOMweb API accepts.')
param tenantId string = tenant().tenantId

@description('Client ID of the Entra app registration that exposes the DICOMweb API (token audience).')
param apiClientId string

@description('FHIR R4 base URL to use instead of creating a workspace and FHIR service (empty: create them).')
param existingFhirUrl string = ''

@description('Origins allowed to call the API from a browser (DICOMweb viewers), e.g. https://viewer.example.org.')
param corsAllowedOrigins array = []

@description('Most instances the Flex Consumption app may scale out to.')
param maximumInstanceCount int = 40

@description('Memory of each Flex Consumption instance, in MB.')
param instanceMemoryMB int = 2048

var suffix = uniqueString(resourceGroup().id, namePrefix)
var appName = '${namePrefix}-dicom-${suffix}'

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    location: location
    name: '${namePrefix}-dicom-id-${suffix}'
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    namePrefix: '${namePrefix}-${suffix}'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    name: take('${namePrefix}st${suffix}', 24)
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    location: location
    name: '${namePrefix}-cosmos-${suffix}'
    principalId: identity.outputs.principalId
  }
}

module healthdata 'modules/healthdata.bicep' = if (empty(existingFhirUrl)) {
  name: 'healthdata'
  params: {
    location: location
    workspaceName: take('${namePrefix}ws${suffix}', 24)
    fhirName: 'fhir'
    tenantId: tenantId
  }
}

var fhirUrl = empty(existingFhirUrl) ? healthdata.outputs.FHIR_URL : existingFhirUrl

module functionapp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    name: appName
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    blobServiceUri: storage.outputs.blobServiceUri
    queueServiceUri: storage.outputs.queueServiceUri
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabase: cosmos.outputs.databaseName
    fhirUrl: fhirUrl
    tenantId: tenantId
    apiClientId: apiClientId
    appInsightsConnectionString: monitoring.outputs.connectionString
    corsAllowedOrigins: corsAllowedOrigins
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    fhirWorkspaceName: empty(existingFhirUrl) ? healthdata.outputs.workspaceName : ''
    fhirServiceName: empty(existingFhirUrl) ? healthdata.outputs.fhirName : ''
  }
}

module eventgrid 'modules/eventgrid.bicep' = {
  name: 'eventgrid'
  params: {
    location: location
    name: '${namePrefix}-blobs-${suffix}'
    storageAccountId: storage.outputs.id
  }
}

output DICOMWEB_BASE_URL string = 'https://${functionapp.outputs.defaultHostName}/v2'
output FHIR_URL string = fhirUrl
output FUNCTION_APP_NAME string = functionapp.outputs.name
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output COSMOS_ACCOUNT_NAME string = cosmos.outputs.name
output EVENT_GRID_TOPIC_NAME string = eventgrid.outputs.name
output AZURE_CLIENT_ID string = identity.outputs.clientId
