"""nsqadmin's core: reading and acting on the cluster, the rolling history behind
its graphs, notifications, graphite, options and metrics."""
