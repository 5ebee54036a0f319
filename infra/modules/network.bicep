// Private networking (main.bicep deploys this module only with privateNetworking=true): a VNet with
//  - snet-app: delegated to Microsoft.App/environments, the delegation Flex Consumption VNet integration
//    needs; the function app sends all its outbound traffic through it (virtualNetworkSubnetId);
//  - snet-pe: the private endpoints of Storage (blob, queue), Cosmos DB (Sql), the DICOM events topic
//    (topic: Event Grid, the app publishes to it) and the Health Data Services workspace
//    (healthcareworkspace: FHIR), each registered in its privatelink DNS zone linked to the VNet, so the
//    app resolves the usual host names to private addresses.
// The data services and the topic close their public endpoints (publicNetworkAccess Disabled) in their
// own modules.
// Inbound to the function app stays public (DICOMweb clients and the Event Grid webhook, see
// functionapp.bicep); Application Insights and Entra ID are reached over the internet.
@description('Azure region.')
param location string

@description('Name prefix of the network resources.')
param namePrefix string

@description('Tags of every resource.')
param tags object

@description('Resource ID of the storage account (blob and queue endpoints).')
param storageAccountId string

@description('Resource ID of the Cosmos DB account.')
param cosmosAccountId string

@description('Resource ID of the Event Grid topic of the DICOM events (events.bicep).')
param eventsTopicId string

@description('Resource ID of the Health Data Services workspace (empty: an existing FHIR service is used, no endpoint).')
param healthWorkspaceId string

@description('Address space of the VNet.')
param addressPrefix string = '10.42.0.0/16'

@description('Subnet of the function app (Flex Consumption instances take their addresses from it: keep it roomy).')
param appSubnetPrefix string = '10.42.0.0/24'

@description('Subnet of the private endpoints.')
param privateEndpointSubnetPrefix string = '10.42.1.0/24'

var appSubnetName = 'snet-app'
var privateEndpointSubnetName = 'snet-pe'

// One entry per private endpoint: the target, its sub-resource (groupId) and the DNS zones it registers in.
var storageEndpoints = [
  {
    name: 'blob'
    target: storageAccountId
    groupId: 'blob'
    zones: [
      'privatelink.blob.${environment().suffixes.storage}'
    ]
  }
  {
    name: 'queue'
    target: storageAccountId
    groupId: 'queue'
    zones: [
      'privatelink.queue.${environment().suffixes.storage}'
    ]
  }
  {
    name: 'cosmos'
    target: cosmosAccountId
    groupId: 'Sql'
    zones: [
      'privatelink.documents.azure.com'
    ]
  }
  {
    name: 'events'
    target: eventsTopicId
    groupId: 'topic'
    zones: [
      'privatelink.eventgrid.azure.net'
    ]
  }
]
var healthEndpoints = empty(healthWorkspaceId) ? [] : [
  {
    name: 'fhir'
    target: healthWorkspaceId
    groupId: 'healthcareworkspace'
    zones: [
      'privatelink.workspace.azurehealthcareapis.com'
      'privatelink.fhir.azurehealthcareapis.com'
    ]
  }
]
var endpoints = concat(storageEndpoints, healthEndpoints)
var zoneNames = [
  'privatelink.blob.${environment().suffixes.storage}'
  'privatelink.queue.${environment().suffixes.storage}'
  'privatelink.documents.azure.com'
  'privatelink.eventgrid.azure.net'
  'privatelink.workspace.azurehealthcareapis.com'
  'privatelink.fhir.azurehealthcareapis.com'
]

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: '${namePrefix}-vnet'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          // the app reaches Entra ID and Application Insights over the internet; for a fixed egress
          // address or egress filtering attach a NAT gateway or a firewall route to this subnet
          defaultOutboundAccess: true
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          defaultOutboundAccess: false
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource appSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: appSubnetName
}

resource privateEndpointSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: privateEndpointSubnetName
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for zone in zoneNames: {
  name: zone
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (zone, i) in zoneNames: {
  parent: zones[i]
  name: '${namePrefix}-vnet-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for endpoint in endpoints: {
  name: '${namePrefix}-pe-${endpoint.name}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnet.id
    }
    privateLinkServiceConnections: [
      {
        name: '${namePrefix}-pe-${endpoint.name}'
        properties: {
          privateLinkServiceId: endpoint.target
          groupIds: [
            endpoint.groupId
          ]
        }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [for zone in endpoint.zones: {
      name: replace(zone, '.', '-')
      properties: {
        privateDnsZoneId: resourceId('Microsoft.Network/privateDnsZones', zone)
      }
    }]
  }
  dependsOn: [
    zones
    zoneLinks
  ]
}]

output vnetName string = vnet.name
output appSubnetId string = appSubnet.id
output privateEndpointSubnetId string = privateEndpointSubnet.id
output privateDnsZones array = zoneNames
