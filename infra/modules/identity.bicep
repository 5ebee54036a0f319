// The function app's user-assigned managed identity: every outbound call (Blob, Queue, Cosmos DB, FHIR) uses it.
@description('Azure region.')
param location string

@description('Identity name.')
param name string

@description('Tags of every resource.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
