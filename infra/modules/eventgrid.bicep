// The Event Grid system topic on the storage account. Flex Consumption blob triggers (source: EventGrid)
// receive BlobCreated events through subscriptions to the function's blobs-extension webhook; deploy.sh
// creates those subscriptions after the code is published, because the webhook key exists only then.
//
// Dead letters: an event Event Grid cannot deliver (the app down for longer than the retry window, a
// rejected webhook call) goes to the eventgrid-deadletter container instead of being dropped. The
// subscriptions (deploy.sh) name that container as deadLetterWithResourceIdentity with the topic's
// system-assigned identity, which gets Storage Blob Data Contributor on that container only.
// The container lives in a small account of its own: with privateNetworking the data account's public
// endpoint is Disabled, and Event Grid writes dead letters through the public endpoint as a trusted
// service (system-assigned identity + bypass AzureServices), which only an account with a firewall, not a
// disabled endpoint, lets through. This account holds event envelopes (blob URLs), not DICOM data.
// It also holds dicom-events-deadletter, the container for the dead letters of the subscriptions to the
// DICOM events topic (events.bicep, which gives that topic's identity the role on it).
@description('Azure region.')
param location string

@description('System topic name.')
param name string

@description('Resource ID of the storage account whose blob events the topic publishes.')
param storageAccountId string

@description('Name of the dead-letter storage account (3-24 lowercase letters and digits).')
param deadLetterAccountName string

@description('Tags of every resource.')
param tags object

@description('Close the dead-letter account to every network but trusted Azure services (Event Grid).')
param privateNetworking bool

var deadLetterContainerName = 'eventgrid-deadletter'
var eventsDeadLetterContainerName = 'dicom-events-deadletter'
// Storage Blob Data Contributor: the role Event Grid needs to write dead-lettered events.
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource deadLetterAccount 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_43: false positive: checkov reads the parameter name, not its value; main.bicep passes take('<prefix>dl<uniqueString>', 24), lowercase letters and digits
  // checkov:skip=CKV_AZURE_206: holds only undeliverable event envelopes (blob URLs), which can be re-created by listing the containers; locally redundant is enough
  // checkov:skip=CKV_AZURE_35: default deployment is public like the rest (Entra auth only, shared keys off); privateNetworking=true sets defaultAction Deny with only trusted Azure services (Event Grid) let through
  // checkov:skip=CKV_AZURE_59: Event Grid delivers dead letters through the public endpoint as a trusted service; Disabled would shut it out (see the top of this file)
  name: deadLetterAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
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
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: privateNetworking ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource deadLetterBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: deadLetterAccount
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: deadLetterBlobs
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Dead letters of the DICOM events topic's subscriptions (events.bicep): envelopes of DicomImage* events.
resource eventsDeadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: deadLetterBlobs
  name: eventsDeadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource topicWritesDeadLetters 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: deadLetterContainer
  name: guid(deadLetterContainer.id, topic.id, storageBlobDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = topic.name
output principalId string = topic.identity.principalId
output deadLetterStorageAccountId string = deadLetterAccount.id
output deadLetterContainerName string = deadLetterContainer.name
// What `az eventgrid system-topic event-subscription create --deadletter-identity systemassigned
// --deadletter-identity-endpoint` takes: the container's resource ID.
output deadLetterEndpoint string = '${deadLetterAccount.id}/blobServices/default/containers/${deadLetterContainerName}'
output deadLetterAccountName string = deadLetterAccount.name
output eventsDeadLetterContainerName string = eventsDeadLetterContainer.name
