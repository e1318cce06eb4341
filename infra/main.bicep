// The monitoring app on Azure: one Flex Consumption function app per location (`locations`: one region by default)
// with everything it needs, identity-based end to end (no storage keys, no App Insights instrumentation keys,
// secrets in Key Vault), and network-restricted: the storage account and the vault deny by default and let in every
// location’s app subnet (service endpoints), the deployer’s addresses (allowedIpAddresses) and, with
// usePrivateEndpoints, only private endpoints. See docs/DEPLOY.md, Network and Several locations.
//
// Per location (modules/region.bicep, and the VNets here): plan, app, app settings, deployment container, VNet,
// diagnostics. Shared: storage account (state, results, queues), Key Vault, identity, Log Analytics, App Insights,
// role assignments. The first location’s app is the one azd deploys (azd-service-name: api); the postdeploy hook
// (infra/hooks/postdeploy.sh) deploys the same package to the others (output AZURE_OTHER_FUNCTION_APP_NAMES).
//
//   azd up                                                    (azd fills infra/main.parameters.json from its env)
//   az deployment group create -g RG -f infra/main.bicep -p environmentName=mon smtpHost=… …   (see docs/DEPLOY.md)
//
// Every setting the app reads (shared.settings.SETTING_NAMES) is an app setting below, fed by a parameter named
// after it in camelCase whose default is the app’s default; tests/test_infra.py keeps the three in step with
// local.settings.json.example. Plain resources only (no registry modules), so CI can parse and check this offline.
// Apostrophes in // comments are written ’: with ASCII ones pycep (the parser of the tests) gets very slow.

targetScope = 'resourceGroup'

// ------------------------------------------------------------------------------------------------- deployment

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd: AZURE_ENV_NAME); part of the hash in every resource name.')
param environmentName string

@minLength(1)
@description('Region of the shared resources (storage, vault, identity, telemetry) and, by default, of the one location; it must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Regions the checks run from, one function app each, all on the one storage account (docs/DEPLOY.md, Several locations); each must offer Flex Consumption. The first is the primary (azd deploys to it; keep it = location so its names stay those of a one-location deployment). Default (and empty): [ location ].')
@maxLength(17)
param locations array = [
  location
]

@description('Function app name; empty: func-<hash>.')
param functionAppName string = ''

@description('Memory of one instance in MB (Flex Consumption: 512, 2048 or 4096). Billing is per GB-s of this size.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most instances the plan scales out to (40-1000). One instance runs every timer; HTTP and e-mail bursts add more.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Log Analytics retention in days (31 days are included in the ingestion price).')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Where the app identity may read metrics and logs for resource checks (Monitoring Reader and Log Analytics Reader): one resource group (default: this one) or a whole subscription. A scope outside this resource group needs a deployer who may assign roles there.')
@allowed([
  'resourceGroup'
  'subscription'
])
param resourceReaderScope string = 'resourceGroup'

@description('Subscription of the resource-reader scope (default: this deployment\'s).')
param resourceReaderSubscriptionId string = subscription().subscriptionId

@description('Resource group of the resource-reader scope when resourceReaderScope is resourceGroup (default: this one).')
param resourceReaderResourceGroupName string = resourceGroup().name

// -------------------------------------------------------------------------------------------------- network

@description('Public addresses let through the storage and Key Vault firewalls, comma-separated: your machine for the CLI, Storage Explorer and `az keyvault secret set` (e.g. 203.0.113.7,198.51.100.0/24; a single address without /32, ranges /30 or wider). Empty: only the app\'s subnet. No effect while usePrivateEndpoints is true.')
param allowedIpAddresses string = ''

@description('Reach storage (blob, queue, table) and Key Vault through private endpoints in the VNet, with privatelink DNS zones, and switch their public network access off entirely (about $30 a month more: four endpoints and four zones). false: service endpoints and firewall rules, free.')
param usePrivateEndpoints bool = false

@description('Address space of the VNet the app is integrated with (private, not overlapping networks you peer it with).')
param vnetAddressPrefix string = '10.42.0.0/16'

@description('The app\'s integration subnet (delegated to Microsoft.App/environments; one address per instance, so /24 covers about 250 of maximumInstanceCount).')
param appSubnetAddressPrefix string = '10.42.0.0/24'

@description('The subnet of the private endpoints (used only with usePrivateEndpoints).')
param privateEndpointSubnetAddressPrefix string = '10.42.1.0/27'

@description('Address space the VNets of the second and further locations are carved from: the n-th other location gets the n-th /20 (app subnet its first /24, private-endpoint subnet the /27 after it). Must not overlap vnetAddressPrefix: with usePrivateEndpoints the VNets are peered.')
param otherLocationsAddressPrefix string = '10.43.0.0/16'

@description('Storage resource logs sent to Log Analytics for blob, queue and table: audit (writes and deletes, cheap) or allLogs (also every read, which at thousands of monitors is several GB a month).')
@allowed([
  'audit'
  'allLogs'
])
param storageLogCategoryGroup string = 'audit'

// ------------------------------------------------------------------------------- app settings (shared/settings.py)
// One parameter per setting, named after it in camelCase, default = the app’s default ('' where the app has none).
// Secrets (@secure) go to Key Vault and reach the app as Key Vault references; empty means not set.

@description('CHECK_CONCURRENCY: checks in flight at once per timer run.')
@minValue(1)
@maxValue(5000)
param checkConcurrency int = 100

@description('TICK_BUDGET_SECONDS: a timer run starts no new check after this many seconds (host.json functionTimeout is 10 minutes); what it did not reach is recorded as not checked.')
@minValue(10)
@maxValue(540)
param tickBudgetSeconds int = 240

@description('FANOUT_THRESHOLD: a timer tick with at least this many due monitors hands them to the location\'s checks queue in batches (0 = never).')
@minValue(0)
param fanoutThreshold int = 2000

@description('FANOUT_BATCH_SIZE: monitors per queue message of a fanned-out tick.')
@minValue(1)
@maxValue(500)
param fanoutBatchSize int = 500

@description('OUTBOUND_ALLOW_CIDRS: networks checks may reach although not public (comma-separated CIDRs; empty = public addresses only).')
param outboundAllowCidrs string = ''

@description('APP_METRICS_TABLES: tables of the app\'s storage account that table_count monitors may count (comma-separated; empty = none; the app\'s own are never allowed).')
param appMetricsTables string = ''

@description('APP_METRICS_QUEUES: queues of the app\'s storage account that queue_depth monitors may read (comma-separated; empty = none; the app\'s own are never allowed).')
param appMetricsQueues string = ''

@description('RESULT_RETENTION_DAYS: raw results, events and timer records are purged after this.')
@minValue(1)
@maxValue(3650)
param resultRetentionDays int = 90

@description('ROLLUP_RETENTION_DAYS: hourly rollups (for uptime) are kept this long.')
@minValue(1)
@maxValue(3650)
param rollupRetentionDays int = 400

@description('GLOBAL_EMAIL_NOTIFICATIONS_ENABLED: the global e-mail switch. While true, smtpHost is required or the app does not start.')
param globalEmailNotificationsEnabled bool = true

@description('SMTP_HOST: SMTP server (required while e-mail is on).')
param smtpHost string = ''

@description('SMTP_PORT')
@minValue(1)
@maxValue(65535)
param smtpPort int = 587

@description('SMTP_SECURITY: starttls, tls (implicit TLS, port 465) or none.')
@allowed([
  'starttls'
  'tls'
  'none'
])
param smtpSecurity string = 'starttls'

@description('SMTP_USERNAME: SMTP AUTH user (set both username and password, or neither).')
param smtpUsername string = ''

@secure()
@description('SMTP_PASSWORD: stored in Key Vault as smtp-password when given.')
param smtpPassword string = ''

@description('SMTP_FROM: sender address.')
param smtpFrom string = 'monitor@localhost.localdomain'

@description('SMTP_TIMEOUT_SECONDS (a number; a string because Bicep has no floats).')
param smtpTimeoutSeconds string = '20'

@description('SMTP_CA_FILE: path of a CA bundle inside the deployed package, for an SMTP server with a private CA.')
param smtpCaFile string = ''

@description('ADMIN_EMAIL_RECIPIENTS: the operator (comma-separated): checker errors and undeliverable events.')
param adminEmailRecipients string = ''

@description('DEFAULT_EMAIL_RECIPIENTS: who hears about a monitor that names no recipients (comma-separated).')
param defaultEmailRecipients string = ''

@description('PUBLIC_BASE_URL: base URL for links in e-mails; empty: the function app\'s own https://<host>.')
param publicBaseUrl string = ''

@description('DELIVERY_MAX_AGE_HOURS: a message that keeps failing transiently is tried again until its event is this old, then failed and the operator told (a number, at most 168; a string because Bicep has no floats).')
param deliveryMaxAgeHours string = '24'

@description('DELIVERY_RETRY_MAX_SECONDS: the longest wait between two tries of a message.')
@minValue(1)
@maxValue(3600)
param deliveryRetryMaxSeconds int = 900

@description('ALERT_RATE_LIMIT_PER_HOUR: at most this many messages an hour to one channel-recipient (0 = no cap).')
@minValue(0)
@maxValue(10000)
param alertRateLimitPerHour int = 20

@description('ERROR_GROUP_SECONDS: checker errors with one cause are collected this long, then told as one notice (0 = each at once).')
@minValue(0)
@maxValue(3600)
param errorGroupSeconds int = 60

@secure()
@description('ACK_SIGNING_KEY: signs the one-click acknowledgement links; stored in Key Vault as ack-signing-key when given (empty: a random key kept in the app\'s storage).')
param ackSigningKey string = ''

@description('ACK_LINK_HOURS: how long an acknowledgement link works (a number; a string because Bicep has no floats).')
param ackLinkHours string = '24'

@description('STATUS_PAGE_TITLE: the public status page\'s title.')
param statusPageTitle string = 'System status'

@description('STATUS_PAGE_LOGO_URL: a logo on the status page: an https URL or a path on the app; empty: none.')
param statusPageLogoUrl string = ''

@description('WHMCS_API_URL: the http(s) URL of WHMCS\'s includes/api.php (stock monitors).')
param whmcsApiUrl string = ''

@description('WHMCS_IDENTIFIER: WHMCS API credential identifier.')
param whmcsIdentifier string = ''

@secure()
@description('WHMCS_SECRET: stored in Key Vault as whmcs-secret when given.')
param whmcsSecret string = ''

@secure()
@description('WHMCS_ACCESS_KEY: stored in Key Vault as whmcs-access-key when given.')
param whmcsAccessKey string = ''

@description('WHMCS_TIMEOUT_SECONDS (a number).')
param whmcsTimeoutSeconds string = '20'

@description('INVENTREE_URL: base URL of InvenTree (parts-list monitors).')
param inventreeUrl string = ''

@secure()
@description('INVENTREE_TOKEN: stored in Key Vault as inventree-token when given.')
param inventreeToken string = ''

@description('INVENTREE_TIMEOUT_SECONDS (a number).')
param inventreeTimeoutSeconds string = '15'

@description('INVENTREE_AVAILABLE_FIELD: which InvenTree stock figure counts as available.')
@allowed([
  'unallocated_stock'
  'in_stock'
  'total_in_stock'
])
param inventreeAvailableField string = 'unallocated_stock'

// ------------------------------------------------------------------------------------------------------ names

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var appName = empty(functionAppName) ? 'func-${resourceToken}' : functionAppName
var deploymentContainerName = 'app-package-${take(appName, 32)}-${take(resourceToken, 7)}'

// ---------------------------------------------------------------------------------------------- locations
// One entry per location. The first keeps the names of a one-location deployment; the others add the region.
// CHECKS_QUEUE: monitor-checks with one location, monitor-checks-<location> per location with several (each
// location checks only its own batches). Storage service endpoint: the regional one reaches an account in the
// subnet’s own region only, so other regions’ subnets use the cross-region Microsoft.Storage.Global (a subnet
// takes one of the two).

var regions = empty(locations) ? [
  location
] : locations
var severalLocations = length(regions) > 1

var apps = [for (loc, i) in regions: {
  location: loc
  appName: (i == 0) ? appName : '${appName}-${loc}'
  planName: (i == 0) ? 'plan-${resourceToken}' : 'plan-${resourceToken}-${loc}'
  vnetName: (i == 0) ? 'vnet-${resourceToken}' : 'vnet-${resourceToken}-${loc}'
  deploymentContainerName: (i == 0) ? deploymentContainerName : 'app-package-${take(resourceToken, 7)}-${loc}'
  // the host id is the app name cut to 32 characters, which two regions’ names could share
  hostId: (i == 0) ? '' : take('${resourceToken}-${loc}', 32)
  checksQueue: severalLocations ? 'monitor-checks-${loc}' : 'monitor-checks'
  vnetAddressPrefix: (i == 0) ? vnetAddressPrefix : cidrSubnet(otherLocationsAddressPrefix, 20, i - 1)
  appSubnetAddressPrefix: (i == 0) ? appSubnetAddressPrefix : cidrSubnet(cidrSubnet(otherLocationsAddressPrefix, 20, i - 1), 24, 0)
  privateEndpointSubnetAddressPrefix: (i == 0) ? privateEndpointSubnetAddressPrefix : cidrSubnet(cidrSubnet(otherLocationsAddressPrefix, 20, i - 1), 27, 8)
  storageServiceEndpoint: (loc == location) ? 'Microsoft.Storage' : 'Microsoft.Storage.Global'
}]

// The tables and queues of shared/storage.py (TABLES, EVENTS_QUEUE, POISON_QUEUE) and every location’s checks queue
// with the poison queue the host makes for it; the app also creates them on first use, so these only make a fresh
// deployment complete from the start.
var tableNames = [
  'monitors'
  'state'
  'results'
  'blocks'
  'rollups'
  'downtimes'
  'events'
  'deliveries'
  'meta'
  'ticks'
  'snapshots'
  'alertrules'
  'leases'
  'channels'
  'windows'
  'alerting'
]
var queueNames = concat([
  'monitor-events'
  'monitor-events-poison'
], flatten(map(apps, app => [
  app.checksQueue
  '${app.checksQueue}-poison'
])))

// allowedIpAddresses as a list (azd passes every parameter as one string): '203.0.113.7, 198.51.100.0/24' -> two.
var allowedIps = filter(map(split(allowedIpAddresses, ','), ip => trim(ip)), ip => !empty(ip))

// ------------------------------------------------------------------------------------------------- identity

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${resourceToken}'
  location: location
  tags: tags
}

// -------------------------------------------------------------------------------------------------- network
// One VNet per location (VNet integration is regional): each app’s outbound traffic enters its location’s VNet
// (Flex Consumption VNet integration routes all of it); the storage account and the vault admit every app subnet
// through its service endpoints. The private-endpoint subnet is used in the first location’s VNet only (the
// endpoints are there; the other VNets are peered to it). Subnet names without ’_’ (Flex).

var appSubnetName = 'snet-app'
var privateEndpointSubnetName = 'snet-private-endpoints'

resource vnets 'Microsoft.Network/virtualNetworks@2024-05-01' = [for app in apps: {
  name: app.vnetName
  location: app.location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        app.vnetAddressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: app.appSubnetAddressPrefix
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          serviceEndpoints: [
            {
              service: app.storageServiceEndpoint
            }
            {
              service: 'Microsoft.KeyVault'
            }
          ]
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: app.privateEndpointSubnetAddressPrefix
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}]

// Every location’s app subnet, in the order of `locations` (the first is the primary’s).
var appSubnetIds = [for (app, i) in apps: '${vnets[i].id}/subnets/${appSubnetName}']
var privateEndpointSubnetId = '${vnets[0].id}/subnets/${privateEndpointSubnetName}'

// -------------------------------------------------------------------------------------------------- storage

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    accessTier: 'Hot'
    // Deny by default: the apps’ subnets and the deployer’s addresses only; with private endpoints, no public access.
    publicNetworkAccess: usePrivateEndpoints ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      virtualNetworkRules: [for subnetId in appSubnetIds: {
        id: subnetId
        action: 'Allow'
      }]
      ipRules: [for ip in allowedIps: {
        value: ip
        action: 'Allow'
      }]
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

// Storage Blob Data Owner: the deployment package container and the host’s blobs (timer locks, schedule status).
resource storageBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor: the events queue (app and queue trigger) and its poison queue.
resource storageQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '974c5e8b-45b9-4653-ba55-5f855dd0fb88')
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor: every table of the app.
resource storageTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ----------------------------------------------------------------------------------------------- monitoring

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
      disableLocalAuth: true // no workspace keys: ingestion and queries with Entra tokens only
    }
  }
}

// Local (instrumentation-key) auth off: telemetry is accepted only with an Entra token of an identity that holds
// Monitoring Metrics Publisher here (APPLICATIONINSIGHTS_AUTHENTICATION_STRING below names ours).
resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

// Monitoring Metrics Publisher: send telemetry to App Insights with Entra auth.
resource monitoringMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, '3913510d-42f4-4e42-8a64-420c390055eb')
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '3913510d-42f4-4e42-8a64-420c390055eb')
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Reader and Log Analytics Reader at the scope the resource checks need.
module resourceReaderRolesInResourceGroup 'modules/reader-roles-resource-group.bicep' = if (resourceReaderScope == 'resourceGroup') {
  name: 'reader-roles-${resourceToken}'
  scope: resourceGroup(resourceReaderSubscriptionId, resourceReaderResourceGroupName)
  params: {
    principalId: identity.properties.principalId
  }
}

module resourceReaderRolesInSubscription 'modules/reader-roles-subscription.bicep' = if (resourceReaderScope == 'subscription') {
  name: 'reader-roles-${resourceToken}'
  scope: subscription(resourceReaderSubscriptionId)
  params: {
    principalId: identity.properties.principalId
  }
}

// ------------------------------------------------------------------------------------------------ Key Vault

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-${resourceToken}'
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // Irreversible: a deleted vault (and secret) stays recoverable for the 7 days and cannot be purged before.
    enablePurgeProtection: true
    publicNetworkAccess: usePrivateEndpoints ? 'Disabled' : 'Enabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      virtualNetworkRules: [for subnetId in appSubnetIds: {
        id: subnetId
        ignoreMissingVnetServiceEndpoint: false
      }]
      ipRules: [for ip in allowedIps: {
        value: ip
      }]
    }
  }
}

// Key Vault Secrets User: the app resolves its Key Vault references with this identity (keyVaultReferenceIdentity).
resource keyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, identity.id, '4633458b-17de-408a-b874-0445c86b69e6')
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '4633458b-17de-408a-b874-0445c86b69e6')
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// A secret is written only when its parameter is given; an empty one leaves the vault (and any value set there by
// hand) alone and the app setting empty, which the app reads as "not set".
resource smtpPasswordSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(smtpPassword)) {
  parent: keyVault
  name: 'smtp-password'
  properties: {
    value: smtpPassword
  }
}

resource whmcsSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(whmcsSecret)) {
  parent: keyVault
  name: 'whmcs-secret'
  properties: {
    value: whmcsSecret
  }
}

resource whmcsAccessKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(whmcsAccessKey)) {
  parent: keyVault
  name: 'whmcs-access-key'
  properties: {
    value: whmcsAccessKey
  }
}

resource inventreeTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(inventreeToken)) {
  parent: keyVault
  name: 'inventree-token'
  properties: {
    value: inventreeToken
  }
}

resource ackSigningKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(ackSigningKey)) {
  parent: keyVault
  name: 'ack-signing-key'
  properties: {
    value: ackSigningKey
  }
}

// --------------------------------------------------------------------------------------------- function apps

var keyVaultUri = keyVault.properties.vaultUri

// The app settings every location shares; modules/region.bicep adds the location’s own (CHECK_LOCATION,
// CHECKS_QUEUE, PUBLIC_BASE_URL) and writes the whole set (the appsettings resource replaces it on every
// deployment). No AzureWebJobsStorage connection string: the host and the app reach storage with the identity
// (AzureWebJobsStorage__*), and Flex Consumption takes the runtime from functionAppConfig, so
// FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION are not set either.
var appSettings = {
  // storage: identity-based (the host and shared/storage.py)
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue

  // telemetry: Entra auth only, OpenTelemetry from the host (host.json telemetryMode, set here) and the worker
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  AzureFunctionsJobHost__telemetryMode: 'OpenTelemetry'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'

  // engine
  CHECK_CONCURRENCY: string(checkConcurrency)
  TICK_BUDGET_SECONDS: string(tickBudgetSeconds)
  FANOUT_THRESHOLD: string(fanoutThreshold)
  FANOUT_BATCH_SIZE: string(fanoutBatchSize)
  // every location, the same in each app (CHECK_LOCATION and CHECKS_QUEUE are per location: modules/region.bicep)
  CHECK_LOCATIONS: join(regions, ',')
  OUTBOUND_ALLOW_CIDRS: outboundAllowCidrs
  APP_METRICS_TABLES: appMetricsTables
  APP_METRICS_QUEUES: appMetricsQueues
  RESULT_RETENTION_DAYS: string(resultRetentionDays)
  ROLLUP_RETENTION_DAYS: string(rollupRetentionDays)

  // e-mail
  GLOBAL_EMAIL_NOTIFICATIONS_ENABLED: globalEmailNotificationsEnabled ? 'true' : 'false'
  SMTP_HOST: smtpHost
  SMTP_PORT: string(smtpPort)
  SMTP_SECURITY: smtpSecurity
  SMTP_USERNAME: smtpUsername
  SMTP_PASSWORD: empty(smtpPassword) ? '' : '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/smtp-password/)'
  SMTP_FROM: smtpFrom
  SMTP_TIMEOUT_SECONDS: smtpTimeoutSeconds
  SMTP_CA_FILE: smtpCaFile
  ADMIN_EMAIL_RECIPIENTS: adminEmailRecipients
  DEFAULT_EMAIL_RECIPIENTS: defaultEmailRecipients
  DELIVERY_MAX_AGE_HOURS: deliveryMaxAgeHours
  DELIVERY_RETRY_MAX_SECONDS: string(deliveryRetryMaxSeconds)

  // alerting: rate cap, grouping, acknowledgement links
  ALERT_RATE_LIMIT_PER_HOUR: string(alertRateLimitPerHour)
  ERROR_GROUP_SECONDS: string(errorGroupSeconds)
  ACK_SIGNING_KEY: empty(ackSigningKey) ? '' : '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/ack-signing-key/)'
  ACK_LINK_HOURS: ackLinkHours

  // the public status page
  STATUS_PAGE_TITLE: statusPageTitle
  STATUS_PAGE_LOGO_URL: statusPageLogoUrl

  // stock (WHMCS)
  WHMCS_API_URL: whmcsApiUrl
  WHMCS_IDENTIFIER: whmcsIdentifier
  WHMCS_SECRET: empty(whmcsSecret) ? '' : '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/whmcs-secret/)'
  WHMCS_ACCESS_KEY: empty(whmcsAccessKey) ? '' : '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/whmcs-access-key/)'
  WHMCS_TIMEOUT_SECONDS: whmcsTimeoutSeconds

  // parts lists (InvenTree)
  INVENTREE_URL: inventreeUrl
  INVENTREE_TOKEN: empty(inventreeToken) ? '' : '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/inventree-token/)'
  INVENTREE_TIMEOUT_SECONDS: inventreeTimeoutSeconds
  INVENTREE_AVAILABLE_FIELD: inventreeAvailableField
}

// One plan + app per location (modules/region.bicep), all on the one storage account and identity. The first
// location’s app carries azd-service-name: api (azd deploys to it); infra/hooks/postdeploy.sh deploys the same
// package to the others.
module regionApps 'modules/region.bicep' = [for (app, i) in apps: {
  name: 'app-${resourceToken}-${app.location}'
  params: {
    location: app.location
    appName: app.appName
    planName: app.planName
    deploymentContainerName: app.deploymentContainerName
    tags: (i == 0) ? union(tags, {
      'azd-service-name': 'api'
    }) : tags
    identityId: identity.id
    storageAccountName: storage.name
    subnetId: appSubnetIds[i]
    logAnalyticsWorkspaceId: logAnalytics.id
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    sharedAppSettings: appSettings
    checkLocation: app.location
    checksQueue: app.checksQueue
    publicBaseUrl: publicBaseUrl
    hostId: app.hostId
  }
  dependsOn: [
    blobService
    // the app reaches storage and the vault with the identity’s roles from its first start
    storageBlobDataOwner
    storageQueueDataContributor
    storageTableDataContributor
    monitoringMetricsPublisher
    keyVaultSecretsUser
    smtpPasswordSecret
    whmcsSecretSecret
    whmcsAccessKeySecret
    inventreeTokenSecret
    ackSigningKeySecret
    tables
    queues
    // with usePrivateEndpoints, the app starts only once storage and the vault resolve to their endpoints
    privateDnsZoneGroups
    privateDnsZoneLinks
    peeringsToFirstLocation
    peeringsFromFirstLocation
  ]
}]

// --------------------------------------------------------------------------------------- diagnostic settings
// Resource logs and platform metrics to the workspace (Application Insights keeps the app’s own telemetry); each
// app’s own is in modules/region.bicep.

// The account itself has metrics only; its logs belong to the blob, queue and table services below.
resource storageDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: storage
  properties: {
    workspaceId: logAnalytics.id
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        categoryGroup: storageLogCategoryGroup
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        categoryGroup: storageLogCategoryGroup
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        categoryGroup: storageLogCategoryGroup
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

// Key Vault audit events: every secret read (the app’s references) and write, who and from where.
resource keyVaultDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: keyVault
  properties: {
    workspaceId: logAnalytics.id
    logs: [
      {
        categoryGroup: 'audit'
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

// ----------------------------------------------------------------------------- private endpoints (optional)
// usePrivateEndpoints: one endpoint per storage service the app uses and one for the vault, in the first location’s
// VNet, each with its privatelink DNS zone linked to every location’s VNet so the usual host names resolve to the
// private addresses inside them. The other locations’ VNets are peered with the first (global VNet peering), which
// is how their apps reach the endpoints: one set of endpoints and zones however many locations.

var privateEndpointTargets = [
  {
    groupId: 'blob'
    zone: 'privatelink.blob.${environment().suffixes.storage}'
    resourceId: storage.id
  }
  {
    groupId: 'queue'
    zone: 'privatelink.queue.${environment().suffixes.storage}'
    resourceId: storage.id
  }
  {
    groupId: 'table'
    zone: 'privatelink.table.${environment().suffixes.storage}'
    resourceId: storage.id
  }
  {
    groupId: 'vault'
    zone: 'privatelink${keyVaultDnsSuffix}'
    resourceId: keyVault.id
  }
]

// '.vault.azure.net' -> '.vaultcore.azure.net' (the vault’s privatelink zone, in every cloud)
var keyVaultDnsSuffix = replace(environment().suffixes.keyvaultDns, '.vault.', '.vaultcore.')

// Nothing of this section is deployed unless usePrivateEndpoints is true.
var privateEndpointsToDeploy = usePrivateEndpoints ? privateEndpointTargets : []

resource privateDnsZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for target in privateEndpointsToDeploy: {
  name: target.zone
  location: 'global'
  tags: tags
}]

// Every zone linked to every location’s VNet: link k is zone k / locations with VNet k % locations (with one
// location, link i is zone i with the one VNet).
var privateDnsZoneLinkPairs = [for k in range(0, length(privateEndpointsToDeploy) * length(apps)): {
  zone: k / length(apps)
  vnet: k % length(apps)
}]

resource privateDnsZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for pair in privateDnsZoneLinkPairs: {
  parent: privateDnsZones[pair.zone]
  name: '${apps[pair.vnet].vnetName}-${privateEndpointsToDeploy[pair.zone].groupId}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnets[pair.vnet].id
    }
  }
}]

// The other locations’ VNets peered with the first, both ways (only with usePrivateEndpoints; the address spaces
// do not overlap: otherLocationsAddressPrefix). One at a time: peerings of one VNet must not be changed at once.
var peeredLocations = usePrivateEndpoints ? range(1, length(apps) - 1) : []

@batchSize(1)
resource peeringsToFirstLocation 'Microsoft.Network/virtualNetworks/virtualNetworkPeerings@2024-05-01' = [for i in peeredLocations: {
  parent: vnets[i]
  name: 'to-${apps[0].vnetName}'
  properties: {
    remoteVirtualNetwork: {
      id: vnets[0].id
    }
    allowVirtualNetworkAccess: true
    allowForwardedTraffic: false
    allowGatewayTransit: false
    useRemoteGateways: false
  }
}]

@batchSize(1)
resource peeringsFromFirstLocation 'Microsoft.Network/virtualNetworks/virtualNetworkPeerings@2024-05-01' = [for i in peeredLocations: {
  parent: vnets[0]
  name: 'to-${apps[i].vnetName}'
  properties: {
    remoteVirtualNetwork: {
      id: vnets[i].id
    }
    allowVirtualNetworkAccess: true
    allowForwardedTraffic: false
    allowGatewayTransit: false
    useRemoteGateways: false
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for target in privateEndpointsToDeploy: {
  name: 'pe-${target.groupId}-${resourceToken}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: privateEndpointSubnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'pe-${target.groupId}-${resourceToken}'
        properties: {
          privateLinkServiceId: target.resourceId
          groupIds: [
            target.groupId
          ]
        }
      }
    ]
  }
}]

resource privateDnsZoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (target, i) in privateEndpointsToDeploy: {
  parent: privateEndpoints[i]
  name: '${target.groupId}-zone-group'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: target.groupId
        properties: {
          privateDnsZoneId: privateDnsZones[i].id
        }
      }
    ]
  }
}]

// ---------------------------------------------------------------------------------------------------- outputs

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
// the first location’s app (the one azd deploys to)
output AZURE_FUNCTION_APP_NAME string = regionApps[0].outputs.name
output SERVICE_API_NAME string = regionApps[0].outputs.name
output SERVICE_API_BASE_URL string = 'https://${regionApps[0].outputs.defaultHostName}'
// every location’s, in the order of CHECK_LOCATIONS (JSON arrays in the azd environment)
output AZURE_FUNCTION_APP_LOCATIONS array = regions
output AZURE_FUNCTION_APP_NAMES array = [for (app, i) in apps: regionApps[i].outputs.name]
output SERVICE_API_BASE_URLS array = [for (app, i) in apps: 'https://${regionApps[i].outputs.defaultHostName}']
// the apps infra/hooks/postdeploy.sh deploys to after azd’s own deploy (space-separated; empty with one location)
output AZURE_OTHER_FUNCTION_APP_NAMES string = join(map(skip(apps, 1), app => app.appName), ' ')
output AZURE_STORAGE_ACCOUNT_NAME string = storage.name
output AZURE_KEY_VAULT_NAME string = keyVault.name
output AZURE_VIRTUAL_NETWORK_NAME string = vnets[0].name
output APPLICATIONINSIGHTS_NAME string = appInsights.name
output AZURE_LOG_ANALYTICS_WORKSPACE_ID string = logAnalytics.properties.customerId
