// An Azure Health Data Services workspace with a FHIR R4 service (Entra ID authentication).
@description('Azure region.')
param location string

@description('Workspace name (3-24 lowercase letters and digits).')
param workspaceName string

@description('FHIR service name within the workspace.')
param fhirName string

@description('Tenant whose tokens the FHIR service accepts.')
param tenantId string

@description('Tags of every resource.')
param tags object

@description('Close the public endpoint: only the workspace private endpoint (network.bicep) reaches FHIR.')
param privateNetworking bool

resource workspace 'Microsoft.HealthcareApis/workspaces@2024-03-31' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
  }
}

resource fhir 'Microsoft.HealthcareApis/workspaces/fhirservices@2024-03-31' = {
  parent: workspace
  name: fhirName
  location: location
  kind: 'fhir-R4'
  tags: tags
  properties: {
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    authenticationConfiguration: {
      authority: '${environment().authentication.loginEndpoint}${tenantId}'
      audience: 'https://${workspaceName}-${fhirName}.fhir.azurehealthcareapis.com'
      smartProxyEnabled: false
    }
  }
}

output FHIR_URL string = 'https://${workspaceName}-${fhirName}.fhir.azurehealthcareapis.com'
output workspaceId string = workspace.id
output workspaceName string = workspace.name
output fhirName string = fhir.name
