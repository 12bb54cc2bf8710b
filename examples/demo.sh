#!/usr/bin/env bash
# The Conflux demo: several actors write to one project at once, with different merge
# strategies, an override, a review conflict and its resolution, and a promotion from staging
# to production. Run it with 'make demo' (which installs Conflux into .venv first).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
project="${DEMO_PROJECT:-$here/../demo-project}"
rm -rf "$project" && mkdir -p "$project"
cd "$project"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "A project from the sample schema"
run conflux init --schema "$here/schema.toml"

step "The teams' existing config trees are imported (YAML, JSON, TOML, KDL, Jsonnet, CUE)"
# Each document becomes an entity; every field one operation, applied as one atomic batch.
export CONFLUX_ACTOR=pipeline:migration
run conflux import "$here/tree/services" --entity-type service --intent "adopt the team trees"
run conflux import "$here/tree/routes" --entity-type route --intent "adopt the team trees"
run conflux import "$here/tree/upstreams" --entity-type upstream --intent "adopt the team trees"
echo "Importing the same tree again writes nothing:"
run conflux import "$here/tree/services" --entity-type service
run conflux get service.gateway
echo "The imported state becomes the first milestone, a commit in .conflux/milestones.git:"
run conflux milestone create -m "adopted the team trees"
unset CONFLUX_ACTOR

step "The platform team describes the service and its route (a human)"
export CONFLUX_ACTOR=human:zara
run conflux set service.checkout image registry.local/checkout:1.4.2 --intent "initial release"
run conflux set service.checkout ports 8080 8443 --add
run conflux set service.checkout env_vars '{"LOG_LEVEL": "info"}'
run conflux set route.api-v1 service checkout
run conflux set route.api-v1 path /api/v1
run conflux set route.api-v1 timeout 30s
run conflux set upstream.backend targets 10.0.1.3 10.0.1.4 --add
echo "The route sits under its service in the entity tree (the schema's [entity.service.children]):"
run conflux move route.api-v1 service.checkout --position a0
run conflux tree
unset CONFLUX_ACTOR

step "Three actors write at the same time"
(
  for w in 50 70 90 60; do
    conflux set route.api-v1 weight "$w" --actor autoscaler:autoscaler-7 --intent load-response
  done
) &
(
  conflux set service.checkout image registry.local/checkout:1.5.0 --actor pipeline:ci-pipeline \
    --intent "release 1.5.0"
  conflux set upstream.backend targets 10.0.1.5 --add --actor pipeline:ci-pipeline --intent scale-out
  conflux set service.checkout replicas 4 --actor pipeline:ci-pipeline --intent "release 1.5.0"
) &
(
  conflux set route.api-v1 timeout 10s --actor human:zara --intent "fail fast"
  conflux set service.checkout replicas 6 --actor human:zara --intent "holiday traffic"
  conflux set upstream.backend targets 10.0.1.3 --remove --actor human:zara --intent "drain host"
) &
wait
echo "weight is a max field (90 wins), timeout a min field (10s wins), replicas max (6 wins),"
echo "targets an observed-remove set, image last-writer-wins:"
run conflux get route.api-v1
run conflux get service.checkout
run conflux get upstream.backend

step "An override brings the max field down"
run conflux set route.api-v1 weight 80 --override --actor human:zara --intent "manual override"
run conflux get route.api-v1 weight

step "Two people pick a tier concurrently: a review conflict"
# The pipeline declares with --base "" that it saw no earlier value, so neither write
# supersedes the other; both are kept until someone decides.
run conflux set service.checkout tier web --actor human:zara --intent "user facing"
run conflux set service.checkout tier batch --base "" --actor pipeline:ci-pipeline \
  --intent "nightly jobs"
run conflux conflicts
run conflux resolve service.checkout tier web --actor human:zara --intent "agreed in review"
run conflux conflicts

step "Staging gets a canary change, then is promoted to production"
run conflux set service.checkout image registry.local/checkout:1.6.0-rc1 --env staging \
  --actor pipeline:ci-pipeline --intent canary
run conflux set service.checkout replicas 2 --env staging --actor pipeline:ci-pipeline --intent canary
run conflux get service.checkout --env staging
run conflux promote --from staging --to production service.checkout --actor human:zara \
  --intent "canary healthy"
run conflux get service.checkout

step "Who did what"
run conflux blame route.api-v1
run conflux blame service.checkout
run conflux log --limit 12
run conflux log --entity route.api-v1
run conflux status

step "A milestone: the resolved state as a readable git commit"
run conflux milestone create -m "post-canary traffic shift" --actor human:zara
run git --git-dir .conflux/milestones.git log -1 --stat --format='Author: %an%n%n%B'
run conflux set route.api-v1 weight 85 --actor autoscaler:autoscaler-7 --intent load-response
run conflux diff
run conflux status

step "Signed changes: a key, a signed write, a forgery refused, the audit trail verified"
rm -f zara.pem
run conflux keys generate --actor human:zara --output zara.pem --register --key-id zara-laptop
run conflux set service.checkout image registry.local/checkout:1.6.0 --actor human:zara \
  --sign-key zara.pem --intent "release 1.6.0"
echo "mallory tries to sign with zara's key:"
conflux set service.checkout image evil/checkout:latest --actor human:mallory \
  --sign-key zara.pem || true
run conflux audit export --since 80 --output audit.jsonl
run conflux audit verify audit.jsonl --key-registry .conflux/keys.json
echo "one byte of the signed value changed:"
sed -i 's/"new":"registry.local\/checkout:1.6.0"/"new":"registry.local\/checkout:1.6.1"/' audit.jsonl
conflux audit verify audit.jsonl --key-registry .conflux/keys.json || true

step "The resolved state, exported as files (one per entity and environment)"
run conflux export --format yaml --env production --output exported
find exported -type f | sort | head -20
run cat exported/production/route/api-v1.yaml
