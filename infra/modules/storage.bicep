// Storage: instance, metadata, import and import-errors containers, the deployment package container,
// the fhir-sync queues and the dicom-events queue (where the DICOM events go without an Event Grid topic
// endpoint, DICOM_EVENTS_TOPIC_ENDPOINT). Shared-key access is disabled: only Entra identities get in.
// With privateNetworking the public endpoint is closed (reached through private endpoints, network.bicep).
@description('Azure region.')
param location string

@description('Storage account name (3-24 lowercase letters and digits).')
param name string

@description('Tags of every resource.')
param tags object

@description('Replication of the account (the DICOM archive): geo-redundant by default.')
param skuName string = 'Standard_GRS'

@description('Close the public endpoint: only private endpoints reach the account.')
param privateNetworking bool

@description('Object IDs of users, groups or service principals that may drop files into the import container.')
param importUploaderPrincipalIds array

@description('Days a deleted blob or container can be restored.')
param softDeleteDays int = 7

var importContainerName = 'dicom-import'
var containers = [
  'dicom'
  'dicom-metadata'
  'dicom-import'
  'dicom-import-errors'
  'app-package'
]
var queues = [
  'fhir-sync'
  'fhir-sync-poison'
  'dicom-events'
  'dicom-operations'
  'dicom-operations-poison'
]
// Storage Blob Data Contributor: read, write and delete blobs (scoped to the import container only).
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: the default (public) deployment has no VNet, so the Flex app reaches storage over the public endpoint with Entra auth only (shared keys off); privateNetworking=true sets defaultAction Deny and publicNetworkAccess Disabled (tests/unit/test_infra.py)
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in containers: {
  parent: blobService
  name: container
  properties: {
    publicAccess: 'None'
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource storageQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queue in queues: {
  parent: queueService
  name: queue
}]

resource importContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: importContainerName
}

// Whoever drops DICOM files for the import trigger (shared keys are off, so an Entra role is the only way in).
resource importUploaders 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principalId in importUploaderPrincipalIds: {
  scope: importContainer
  name: guid(importContainer.id, principalId, storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: principalId
  }
  dependsOn: [
    blobContainers
  ]
}]

output id string = account.id
output name string = account.name
output blobServiceUri string = account.properties.primaryEndpoints.blob
output queueServiceUri string = account.properties.primaryEndpoints.queue
output deploymentContainerName string = 'app-package'
output importContainerName string = importContainerName
output importContainerUrl string = '${account.properties.primaryEndpoints.blob}${importContainerName}'
