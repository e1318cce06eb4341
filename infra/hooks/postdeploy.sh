#!/usr/bin/env bash
# azd postdeploy hook (azure.yaml): with several locations (docs/DEPLOY.md, Several locations), deploy the package
# azd has just deployed to the first location's app (azd-service-name: api) to every other location's app too, so
# all locations run the same code. Nothing to do with one location.
#
# Reads from the azd environment (azd passes it to hooks as environment variables):
#   AZURE_OTHER_FUNCTION_APP_NAMES  output of infra/main.bicep: the other locations' apps, space-separated
#   AZURE_RESOURCE_GROUP            the resource group of the deployment
#   AZURE_SUBSCRIPTION_ID           optional: the subscription (else az's current one)
# Run by hand after `azd deploy` the same way: `azd hooks run postdeploy`.
#
# The package is `azd package api` (the same zip azd deploys: this folder, less .funcignore), deployed with
# `az functionapp deployment source config-zip --build-remote true`, which on Flex Consumption publishes through
# the app's /api/publish (one deploy) endpoint with a remote build, as azd does, and waits for the app to start.
set -euo pipefail

others=${AZURE_OTHER_FUNCTION_APP_NAMES:-}
read -r -a apps <<<"$others" || true
if ((${#apps[@]} == 0)); then
  echo "postdeploy: one location, nothing more to deploy."
  exit 0
fi

: "${AZURE_RESOURCE_GROUP:?postdeploy: AZURE_RESOURCE_GROUP is not set (run through azd: azd hooks run postdeploy)}"
for app in "${apps[@]}"; do
  if [[ ! $app =~ ^[A-Za-z0-9][A-Za-z0-9-]*$ ]]; then
    echo "postdeploy: '$app' in AZURE_OTHER_FUNCTION_APP_NAMES is not a function app name" >&2
    exit 1
  fi
done

subscription=()
if [[ -n ${AZURE_SUBSCRIPTION_ID:-} ]]; then
  subscription=(--subscription "$AZURE_SUBSCRIPTION_ID")
fi

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
package="$workdir/api.zip"
echo "postdeploy: packaging the api service for ${#apps[@]} more location(s)"
azd package api --output-path "$package"
if [[ ! -s $package ]]; then
  echo "postdeploy: azd package wrote no $package" >&2
  exit 1
fi

for app in "${apps[@]}"; do
  echo "postdeploy: deploying to $app"
  az functionapp deployment source config-zip ${subscription[@]+"${subscription[@]}"} \
    --resource-group "$AZURE_RESOURCE_GROUP" --name "$app" --src "$package" --build-remote true
done
echo "postdeploy: deployed to ${apps[*]}"
