// Log Analytics and Application Insights (local authentication off: the app sends telemetry with its identity).
@description('Azure region.')
param location string

@description('Name prefix.')
param namePrefix string

@description('Tags of every resource.')
param tags object

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-logs'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${namePrefix}-appi'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

output appInsightsName string = appInsights.name
// The connection string identifies the resource; with local auth disabled it grants nothing by itself.
output connectionString string = appInsights.properties.ConnectionString
