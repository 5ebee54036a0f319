// The Event Grid custom topic of the DICOM events (DicomImageCreated, DicomImageUpdated, DicomImageDeleted,
// in the Azure Health Data Services event schema, i.e. the Event Grid schema). The function app publishes
// them from its change feed with its user-assigned identity, which gets EventGrid Data Sender on the topic;
// local (SAS key) auth is disabled, so only Entra identities publish.
//
// Subscribers create their own event subscriptions on the topic (main.bicep outputs DICOM_EVENTS_TOPIC_ID)
// and should dead-letter to the dicom-events-deadletter container (DICOM_EVENTS_DEADLETTER_ENDPOINT, in the
// dead-letter account of eventgrid.bicep) with the topic's system-assigned identity, which gets Storage Blob
// Data Contributor on that container only:
//   az eventgrid event-subscription create --source-resource-id "$DICOM_EVENTS_TOPIC_ID" --name <name> \
//     --endpoint <subscriber> --deadletter-identity systemassigned \
//     --deadletter-identity-endpoint "$DICOM_EVENTS_DEADLETTER_ENDPOINT"
//
// With privateNetworking the topic's public endpoint is Disabled: the function app publishes through the
// topic's private endpoint (network.bicep, groupId topic, privatelink.eventgrid.azure.net). That setting
// covers publishing only; Event Grid still delivers to subscribers and writes dead letters as before.
@description('Azure region.')
param location string

@description('Custom topic name (3-50 letters, digits and hyphens).')
param name string

@description('Tags of every resource.')
param tags object

@description('Principal ID of the function app identity (publishes the events).')
param principalId string

@description('Close the public endpoint: the function app publishes through the private endpoint (network.bicep).')
param privateNetworking bool

@description('Name of the dead-letter storage account (eventgrid.bicep).')
param deadLetterAccountName string

@description('Name of the container in that account that receives the dead letters of the topic\'s subscriptions.')
param deadLetterContainerName string

// EventGrid Data Sender: publish events to the topic (nothing else).
var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7'
// Storage Blob Data Contributor: the role Event Grid needs to write dead-lettered events.
var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  // checkov:skip=CKV_AZURE_193: the default (public) deployment has no VNet, so the app publishes over the public endpoint with Entra auth only (disableLocalAuth); privateNetworking=true sets publicNetworkAccess Disabled and adds a private endpoint (tests/unit/test_infra.py)
  name: name
  location: location
  tags: tags
  // dead letters of the subscribers' event subscriptions are written with this identity
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'EventGridSchema'
    disableLocalAuth: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    inboundIpRules: []
  }
}

resource appSendsEvents 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: topic
  name: guid(topic.id, principalId, eventGridDataSender)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource deadLetterAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: deadLetterAccountName
}

resource deadLetterBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: deadLetterAccount
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: deadLetterBlobs
  name: deadLetterContainerName
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

output id string = topic.id
output name string = topic.name
// https://<topic>.<region>-1.eventgrid.azure.net/api/events: what EventGridPublisherClient takes
output endpoint string = topic.properties.endpoint
output principalId string = topic.identity.principalId
// What `az eventgrid event-subscription create --deadletter-identity systemassigned
// --deadletter-identity-endpoint` takes: the container's resource ID.
output deadLetterEndpoint string = deadLetterContainer.id
