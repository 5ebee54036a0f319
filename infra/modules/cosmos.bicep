// Cosmos DB for NoSQL (serverless, local auth disabled): database, the index containers (one per QIDO
// level) with the partition key and indexing policies of dicomserver/stores/azure/index.py, and the app's data-plane role.
@description('Azure region.')
param location string

@description('Cosmos DB account name.')
param name string

@description('Principal ID of the function app identity.')
param principalId string

@description('Tags of every resource.')
param tags object

@description('Close the public endpoint: only the private endpoint (network.bicep) reaches the account.')
param privateNetworking bool

// Cosmos DB Built-in Data Contributor (data plane).
var dataContributorRoleId = '00000000-0000-0000-0000-000000000002'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  // checkov:skip=CKV_AZURE_99: the default deployment has no VNet, so the Flex app reaches Cosmos DB over the public endpoint with Entra auth only (local auth off); privateNetworking=true closes it (publicNetworkAccess Disabled, private endpoint)
  // checkov:skip=CKV_AZURE_101: same as CKV_AZURE_99: Disabled with privateNetworking=true (tests/unit/test_infra.py)
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    disableLocalAuth: true
    // the app never changes databases or containers (this template does); keys could not anyway
    disableKeyBasedMetadataWriteAccess: true
    publicNetworkAccess: privateNetworking ? 'Disabled' : 'Enabled'
    minimalTlsVersion: 'Tls12'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: account
  name: 'dicom'
  properties: {
    resource: {
      id: 'dicom'
    }
  }
}

resource studiesContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'studies'
  properties: {
    resource: {
      id: 'studies'
      partitionKey: {
        paths: [
          '/pk'
        ]
        kind: 'Hash'
      }
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/*'
          }
        ]
        excludedPaths: [
          {
            path: '/attrs/*'
          }
          {
            path: '/"_etag"/?'
          }
        ]
        compositeIndexes: [
          [
            {
              path: '/q/StudyDate'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/StudyDate'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/StudyTime'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/StudyTime'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/PatientName'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/PatientName'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/PatientID'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/PatientID'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/PatientBirthDate'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/PatientBirthDate'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/AccessionNumber'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/AccessionNumber'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/ReferringPhysicianName'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/ReferringPhysicianName'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/StudyDescription'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/StudyDescription'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/StudyID'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/StudyID'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/StudyInstanceUID'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/StudyInstanceUID'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
        ]
      }
    }
  }
}

resource seriesContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'series'
  properties: {
    resource: {
      id: 'series'
      partitionKey: {
        paths: [
          '/pk'
        ]
        kind: 'Hash'
      }
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/*'
          }
        ]
        excludedPaths: [
          {
            path: '/attrs/*'
          }
          {
            path: '/"_etag"/?'
          }
        ]
        compositeIndexes: [
          [
            {
              path: '/q/SeriesNumber'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/SeriesNumber'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/Modality'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/Modality'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/SeriesDescription'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/SeriesDescription'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/PerformedProcedureStepStartDate'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/PerformedProcedureStepStartDate'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/q/PerformedProcedureStepStartTime'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/PerformedProcedureStepStartTime'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/SeriesInstanceUID'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/SeriesInstanceUID'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
        ]
      }
    }
  }
}

resource instancesContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'instances'
  properties: {
    resource: {
      id: 'instances'
      partitionKey: {
        paths: [
          '/pk'
        ]
        kind: 'Hash'
      }
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/*'
          }
        ]
        excludedPaths: [
          {
            path: '/attrs/*'
          }
          {
            path: '/metadata/?'
          }
          {
            path: '/frames/*'
          }
          {
            path: '/bulkdata/*'
          }
          {
            path: '/"_etag"/?'
          }
        ]
        compositeIndexes: [
          [
            {
              path: '/q/InstanceNumber'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/q/InstanceNumber'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/SOPClassUID'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/SOPClassUID'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
          [
            {
              path: '/SOPInstanceUID'
              order: 'ascending'
            }
            {
              path: '/sortKey'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/SOPInstanceUID'
              order: 'descending'
            }
            {
              path: '/sortKey'
              order: 'descending'
            }
          ]
        ]
      }
    }
  }
}

// The change feed (dicomserver/stores/azure/changefeed.py): a counter document and one log document per
// batch, per data partition; indexed only on what its reader filters and orders by.
resource changefeedContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'changefeed'
  properties: {
    resource: {
      id: 'changefeed'
      partitionKey: {
        paths: [
          '/pk'
        ]
        kind: 'Hash'
      }
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/seq/?'
          }
          {
            path: '/last/?'
          }
          {
            path: '/ts/?'
          }
          {
            path: '/study/?'
          }
          {
            path: '/partition/?'
          }
          {
            path: '/published/?'
          }
        ]
        excludedPaths: [
          {
            path: '/*'
          }
        ]
      }
    }
  }
}

// Long-running operations (dicomserver/stores/azure/operations.py): one document per operation, read by id.
resource operationsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'operations'
  properties: {
    resource: {
      id: 'operations'
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
      }
    }
  }
}

// Data partitions (dicomserver/stores/azure/partitions.py): one document per partition and the key counter.
resource partitionsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'partitions'
  properties: {
    resource: {
      id: 'partitions'
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
      }
    }
  }
}

// Extended query tags (dicomserver/stores/azure/extended_tags.py): the tag documents in partition "tags",
// the indexing errors of each tag declaration in a partition of their own.
resource extendedQueryTagsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'extendedquerytags'
  properties: {
    resource: {
      id: 'extendedquerytags'
      partitionKey: {
        paths: [
          '/pk'
        ]
        kind: 'Hash'
      }
    }
  }
}

// After the containers: a role assignment created while the database or a container is still being
// created fails (or the app starts before its index exists).
resource dataContributor 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = {
  parent: account
  name: guid(account.id, principalId, dataContributorRoleId)
  properties: {
    roleDefinitionId: '${account.id}/sqlRoleDefinitions/${dataContributorRoleId}'
    principalId: principalId
    scope: account.id
  }
  dependsOn: [
    database
    studiesContainer
    seriesContainer
    instancesContainer
    changefeedContainer
    operationsContainer
    extendedQueryTagsContainer
    partitionsContainer
  ]
}

output id string = account.id
output name string = account.name
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
