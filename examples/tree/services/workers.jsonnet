// Jsonnet: three queue workers from one template
local worker(name, replicas) = {
  name: name,
  image: 'registry.local/workers:3.4.1',
  replicas: replicas,
  env_vars: { QUEUE: name },
  tier: 'batch',
  labels: ['team-platform'],
};
[worker('mailer', 2), worker('thumbnailer', 3), worker('indexer', 1)]
