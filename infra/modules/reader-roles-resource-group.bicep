// Monitoring Reader and Log Analytics Reader for the app identity on one resource group (main.bicep deploys this
// module at the resource group that resourceReaderResourceGroupName names): read metrics, activity and logs of the
// resources the resource checks watch.

targetScope = 'resourceGroup'

@description('Object (principal) id of the app\'s user-assigned managed identity.')
param principalId string

// Monitoring Reader
resource monitoringReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, '43d0d8ad-25c7-4714-9337-8ba259a9fe05')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '43d0d8ad-25c7-4714-9337-8ba259a9fe05')
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Log Analytics Reader
resource logAnalyticsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, '73c42c96-874c-492b-b04d-ab87d138a893')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '73c42c96-874c-492b-b04d-ab87d138a893')
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
