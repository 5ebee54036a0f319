// The Event Grid system topic on the storage account. Flex Consumption blob triggers (source: EventGrid)
// receive BlobCreated events through subscriptions to the function's blobs-extension webhook; deploy.sh
// creates those subscriptions after the code is published, because the webhook key exists only then.
@description('Azure region.')
param location string

@description('System topic name.')
param name string

@description('Resource ID of the storage account.')
param storageAccountId string

resource topic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: name
  location: location
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

output name string = topic.name
