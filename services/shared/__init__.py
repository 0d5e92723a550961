"""What every daemon, the utilities and the Python client share: the wire format
and transports, messages and names, flags and logs, the cluster HTTP client.
The bottom layer: it imports nothing else of greensq."""
