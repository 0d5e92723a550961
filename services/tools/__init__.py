"""NSQ's utilities on greensq.client: nsq_to_file, nsq_to_http, nsq_to_nsq, nsq_tail,
nsq_stat and to_nsq, with NSQ 1.3's flags, defaults, output formats and exit codes.

Each tool is one module with a ``main()`` console script. They share the flag parser
(:mod:`.options`, on :mod:`greensq.services.shared.goflags`), the mapping of go-nsq's
``--consumer-opt`` / ``--producer-opt`` names onto greensq.client (:mod:`.client_config`)
and one run/stop loop with NSQ's signal handling and log format (:mod:`.runner`).
"""
