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

// The audit records of the app (dicomserver/audit.py): JSON messages of the dicomserver.audit logger, sent by the
// Azure Monitor distro (never sampled) to AppTraces with Properties.logger_name. DicomAuditLogs is this app's
// analogue of the Azure DICOM service's AuditLogs diagnostic category: one row per DICOMweb request, refused
// ones included, with the caller's object and app ids, the action, the transaction, the path UIDs and the status.
resource auditLogs 'Microsoft.OperationalInsights/workspaces/savedSearches@2023-09-01' = {
  parent: logs
  name: 'DicomAuditLogs'
  properties: {
    category: 'DICOM'
    displayName: 'DICOM audit logs'
    functionAlias: 'DicomAuditLogs'
    version: 2
    query: '''
AppTraces
| where tostring(Properties.logger_name) == "dicomserver.audit"
| extend Audit = parse_json(Message)
| project TimeGenerated,
    RequestTime = todatetime(Audit.time),
    CorrelationId = tostring(Audit.correlation_id),
    OperationName = tostring(Audit.transaction),
    Action = tostring(Audit.action),
    StatusCode = toint(Audit.status),
    ResultType = tostring(Audit.outcome),
    CallerObjectId = tostring(Audit.caller_object_id),
    CallerAppId = tostring(Audit.caller_app_id),
    Authenticated = tobool(Audit.authenticated),
    StudyInstanceUID = tostring(Audit.study_instance_uid),
    SeriesInstanceUID = tostring(Audit.series_instance_uid),
    SOPInstanceUID = tostring(Audit.sop_instance_uid),
    OperationId,
    AppRoleName,
    AppRoleInstance,
    _ResourceId
'''
  }
}

output appInsightsName string = appInsights.name
output workspaceName string = logs.name
// The workspace ID that `az monitor log-analytics query --workspace` takes.
output workspaceCustomerId string = logs.properties.customerId
output auditFunctionName string = auditLogs.properties.functionAlias
// The connection string identifies the resource; with local auth disabled it grants nothing by itself.
output connectionString string = appInsights.properties.ConnectionString
