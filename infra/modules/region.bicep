// One location of the monitoring app: its Flex Consumption plan and function app, the app’s settings, its
// deployment container (in the shared storage account), its publishing policies and its diagnostic setting.
// main.bicep deploys this once per entry of `locations` and passes in what every location shares: the identity,
// the storage account, the workspace and the app settings that are the same everywhere (`sharedAppSettings`);
// the location’s own settings (CHECK_LOCATION, CHECKS_QUEUE, PUBLIC_BASE_URL) are added here.

targetScope = 'resourceGroup'

@description('Azure region of this location (also its CHECK_LOCATION).')
param location string

@description('Function app name.')
param appName string

@description('Flex Consumption plan name.')
param planName string

@description('Blob container of the deployment package, in the shared storage account.')
param deploymentContainerName string

@description('Tags of the plan and the app (the first location\'s app carries azd-service-name: api).')
param tags object

@description('Resource id of the user-assigned managed identity every location uses.')
param identityId string

@description('The shared storage account (state, results, queues, deployment packages).')
param storageAccountName string

@description('The integration subnet of this location\'s VNet (delegated to Microsoft.App/environments).')
param subnetId string

@description('Resource id of the Log Analytics workspace the diagnostic setting sends to.')
param logAnalyticsWorkspaceId string

@description('Memory of one instance in MB (main.bicep instanceMemoryMB).')
param instanceMemoryMB int

@description('Most instances this location\'s plan scales out to (main.bicep maximumInstanceCount).')
param maximumInstanceCount int

@description('The app settings that are the same in every location (main.bicep appSettings).')
param sharedAppSettings object

@description('CHECK_LOCATION: this location\'s name among CHECK_LOCATIONS.')
param checkLocation string

@description('CHECKS_QUEUE: the queue of this location\'s fanned-out checks (monitor-checks with one location).')
param checksQueue string

@description('PUBLIC_BASE_URL (main.bicep publicBaseUrl); empty: this app\'s own https://<host>.')
param publicBaseUrl string

@description('AzureFunctionsWebHost__hostid; empty: the host derives it from the app name (the first location). Apps on one storage account need distinct host ids, and the name-derived one is cut to 32 characters.')
param hostId string = ''

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2023-12-01' = {
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    // Flex Consumption VNet integration: all outbound traffic (storage, Key Vault, the checks) goes through the subnet.
    virtualNetworkSubnetId: subnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  dependsOn: [
    deploymentContainer
  ]
}

// No publishing with FTP or basic (user/password) credentials: azd, Core Tools and az deploy with Entra tokens.
resource ftpPublishingPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishingPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// All app settings (this resource replaces the whole set on every deployment): the shared ones, then this
// location’s own.
resource appSettings 'Microsoft.Web/sites/config@2023-12-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: union(sharedAppSettings, {
    CHECK_LOCATION: checkLocation
    CHECKS_QUEUE: checksQueue
    PUBLIC_BASE_URL: empty(publicBaseUrl) ? 'https://${functionApp.properties.defaultHostName}' : publicBaseUrl
  }, empty(hostId) ? {} : {
    AzureFunctionsWebHost__hostid: hostId
  })
}

// Resource logs and platform metrics to the workspace (Application Insights keeps the app's own telemetry).
resource functionAppDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: functionApp
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
