// DICOM service on Azure Functions (Flex Consumption) with Blob Storage, Cosmos DB and a FHIR R4
// service in an Azure Health Data Services workspace. main.bicep only composes the modules.
targetScope = 'resourceGroup'

@description('Azure region of every resource.')
param location string = resourceGroup().location

@description('Short lowercase prefix for resource names (3-11 letters or digits).')
@minLength(3)
@maxLength(11)
param namePrefix string

@description('azd environment name (the azd-env-name tag on every resource); defaults to namePrefix.')
param environmentName string = namePrefix

@description('Extra tags for every resource (azd-env-name is always added).')
param tags object = {}

@description('Entra tenant whose tokens the DICOMweb API accepts.')
param tenantId string = tenant().tenantId

@description('Client ID of the Entra app registration that exposes the DICOMweb API (token audience).')
param apiClientId string

@description('FHIR R4 base URL to use instead of creating a workspace and FHIR service (empty: create them).')
param existingFhirUrl string = ''

@description('Origins allowed to call the API from a browser (DICOMweb viewers), e.g. https://viewer.example.org.')
param corsAllowedOrigins array = []

@description('Most instances the Flex Consumption app may scale out to (40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Replication of the storage account that holds the DICOM files.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_GRS'

@description('Object IDs of users, groups or service principals allowed to drop DICOM files into the dicom-import container (Storage Blob Data Contributor on that container).')
param importUploaderPrincipalIds array = []

@description('Private deployment: a VNet for the function app, private endpoints for Storage, Cosmos DB, the DICOM events topic and the FHIR workspace, and their public endpoints disabled. The API itself stays public.')
param privateNetworking bool = false

@description('Data partitions (as the Azure DICOM service v2): STOW, WADO, QIDO and DELETE paths must name a partition, /v2/partitions/{name}/...; the un-partitioned paths answer 400. Like Azure, turn it on for a new deployment: data stored before stays in Microsoft.Default.')
param dataPartitionsEnabled bool = false

var suffix = uniqueString(resourceGroup().id, namePrefix)
var appName = '${namePrefix}-dicom-${suffix}'
var allTags = union(tags, {
  'azd-env-name': environmentName
})

module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    location: location
    name: '${namePrefix}-dicom-id-${suffix}'
    tags: allTags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    namePrefix: '${namePrefix}-${suffix}'
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    name: take('${namePrefix}st${suffix}', 24)
    tags: allTags
    skuName: storageSkuName
    privateNetworking: privateNetworking
    importUploaderPrincipalIds: importUploaderPrincipalIds
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    location: location
    name: '${namePrefix}-cosmos-${suffix}'
    principalId: identity.outputs.principalId
    tags: allTags
    privateNetworking: privateNetworking
  }
}

module healthdata 'modules/healthdata.bicep' = if (empty(existingFhirUrl)) {
  name: 'healthdata'
  params: {
    location: location
    workspaceName: take('${namePrefix}ws${suffix}', 24)
    fhirName: 'fhir'
    tenantId: tenantId
    tags: allTags
    privateNetworking: privateNetworking
  }
}

var fhirUrl = empty(existingFhirUrl) ? healthdata.outputs.FHIR_URL : existingFhirUrl

// Private endpoints for the data services and the subnet the function app integrates with. With an
// existingFhirUrl the FHIR service is not ours: give it a private endpoint into this VNet yourself.
module network 'modules/network.bicep' = if (privateNetworking) {
  name: 'network'
  params: {
    location: location
    namePrefix: '${namePrefix}-${suffix}'
    tags: allTags
    storageAccountId: storage.outputs.id
    cosmosAccountId: cosmos.outputs.id
    eventsTopicId: events.outputs.id
    healthWorkspaceId: empty(existingFhirUrl) ? healthdata.outputs.workspaceId : ''
  }
}

module functionapp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    name: appName
    tags: allTags
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
    eventsTopicEndpoint: events.outputs.endpoint
    appInsightsConnectionString: monitoring.outputs.connectionString
    corsAllowedOrigins: corsAllowedOrigins
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    virtualNetworkSubnetId: privateNetworking ? network.outputs.appSubnetId : ''
    dataPartitionsEnabled: dataPartitionsEnabled
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

// The subscriptions that feed the blob triggers are created by deploy.sh (they need the webhook key of
// the published code); they dead-letter to EVENT_GRID_DEADLETTER_ENDPOINT with the topic's identity.
// Event Grid calls the function app's public endpoint, which stays open with privateNetworking.
module eventgrid 'modules/eventgrid.bicep' = {
  name: 'eventgrid'
  params: {
    location: location
    name: '${namePrefix}-blobs-${suffix}'
    storageAccountId: storage.outputs.id
    deadLetterAccountName: take('${namePrefix}dl${suffix}', 24)
    tags: allTags
    privateNetworking: privateNetworking
  }
}

// The DICOM events (DicomImageCreated/Updated/Deleted): a custom topic the app publishes to with its identity
// (EventGrid Data Sender). Subscribers create their own event subscriptions on DICOM_EVENTS_TOPIC_ID and
// dead-letter to DICOM_EVENTS_DEADLETTER_ENDPOINT with the topic's identity (see events.bicep).
module events 'modules/events.bicep' = {
  name: 'events'
  params: {
    location: location
    name: '${namePrefix}-events-${suffix}'
    tags: allTags
    principalId: identity.outputs.principalId
    privateNetworking: privateNetworking
    deadLetterAccountName: eventgrid.outputs.deadLetterAccountName
    deadLetterContainerName: eventgrid.outputs.eventsDeadLetterContainerName
  }
}

output DICOMWEB_BASE_URL string = 'https://${functionapp.outputs.defaultHostName}/v2'
output FHIR_URL string = fhirUrl
output FUNCTION_APP_NAME string = functionapp.outputs.name
output FUNCTION_APP_HOST_NAME string = functionapp.outputs.defaultHostName
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output COSMOS_ACCOUNT_NAME string = cosmos.outputs.name
output EVENT_GRID_TOPIC_NAME string = eventgrid.outputs.name
output AZURE_CLIENT_ID string = identity.outputs.clientId
output IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId

// azd conventions (resource-group scope)
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output AZURE_FUNCTION_APP_NAME string = functionapp.outputs.name

// Imports: who may write to the import container (Storage Blob Data Contributor on it, nothing else).
output IMPORT_CONTAINER_URL string = storage.outputs.importContainerUrl
output IMPORT_UPLOADER_PRINCIPAL_IDS array = importUploaderPrincipalIds

// Dead letters of the Event Grid subscriptions that deploy.sh creates.
output EVENT_GRID_DEADLETTER_STORAGE_ACCOUNT_ID string = eventgrid.outputs.deadLetterStorageAccountId
output EVENT_GRID_DEADLETTER_CONTAINER string = eventgrid.outputs.deadLetterContainerName
output EVENT_GRID_DEADLETTER_ENDPOINT string = eventgrid.outputs.deadLetterEndpoint

// DICOM events: what a subscriber needs (az eventgrid event-subscription create --source-resource-id
// DICOM_EVENTS_TOPIC_ID --deadletter-identity systemassigned --deadletter-identity-endpoint
// DICOM_EVENTS_DEADLETTER_ENDPOINT ...).
output DICOM_EVENTS_TOPIC_ID string = events.outputs.id
output DICOM_EVENTS_TOPIC_NAME string = events.outputs.name
output DICOM_EVENTS_TOPIC_ENDPOINT string = events.outputs.endpoint
output DICOM_EVENTS_DEADLETTER_ENDPOINT string = events.outputs.deadLetterEndpoint

// Telemetry and audit: request spans in Application Insights, audit records through the DicomAuditLogs function
// of the workspace (az monitor log-analytics query --workspace LOG_ANALYTICS_WORKSPACE_ID --analytics-query DicomAuditLogs).
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.workspaceName
output LOG_ANALYTICS_WORKSPACE_ID string = monitoring.outputs.workspaceCustomerId
output DICOM_AUDIT_FUNCTION string = monitoring.outputs.auditFunctionName

output PRIVATE_NETWORKING bool = privateNetworking
output VNET_NAME string = privateNetworking ? network.outputs.vnetName : ''
