// Monitoring Reader and Log Analytics Reader for the app identity on a whole subscription (main.bicep deploys this
// module when resourceReaderScope is 'subscription'): resource checks across every resource group.

targetScope = 'subscription'

@description('Object (principal) id of the app\'s user-assigned managed identity.')
param principalId string

// Monitoring Reader
resource monitoringReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, '43d0d8ad-25c7-4714-9337-8ba259a9fe05')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '43d0d8ad-25c7-4714-9337-8ba259a9fe05')
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Log Analytics Reader
resource logAnalyticsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, '73c42c96-874c-492b-b04d-ab87d138a893')
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '73c42c96-874c-492b-b04d-ab87d138a893')
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
