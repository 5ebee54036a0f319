// Role assignments of the function app's identity (Cosmos DB's data role is in cosmos.bicep).
@description('Principal ID of the function app identity.')
param principalId string

@description('Storage account name.')
param storageAccountName string

@description('Application Insights name.')
param appInsightsName string

@description('Health Data Services workspace name (empty when an existing FHIR service is used).')
param fhirWorkspaceName string

@description('FHIR service name (empty when an existing FHIR service is used).')
param fhirServiceName string

var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var fhirDataContributor = '5a1fc7df-4bf1-4951-a576-89034ee01acd'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource workspace 'Microsoft.HealthcareApis/workspaces@2024-03-31' existing = if (!empty(fhirWorkspaceName)) {
  name: fhirWorkspaceName
}

resource fhir 'Microsoft.HealthcareApis/workspaces/fhirservices@2024-03-31' existing = if (!empty(fhirWorkspaceName)) {
  parent: workspace
  name: fhirServiceName
}

resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, principalId, storageBlobDataOwner)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: account
  name: guid(account.id, principalId, storageQueueDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, principalId, monitoringMetricsPublisher)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource fhirContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(fhirWorkspaceName)) {
  scope: fhir
  name: guid(fhir.id, principalId, fhirDataContributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', fhirDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
