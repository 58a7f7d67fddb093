"""Run the system as deployed: every process on its own host (network namespace), a
three-node RabbitMQ cluster, and the faults only a cluster has. See README "Cluster tests"."""
