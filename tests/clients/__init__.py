"""Third-party NSQ client libraries' own test suites, run against greensq's daemons.

Each suite is a pinned release fetched from its registry at test time (gnsq's PyPI sdist
ships ``tests/``, nsqjs's npm tarball ships ``test/``) into a cache outside the repository;
none of their code is committed. A suite starts ``nsqd`` and ``nsqlookupd`` itself, by
name, so greensq's console scripts go first on its PATH. nsqjs uses NSQ's fixed ports, so
every suite runs in a private network namespace with only ``lo`` up.

``python -m clients gnsq|nsqjs`` (from ``tests/``) runs one by hand; ``--daemons DIR`` puts
another build's ``nsqd`` first, such as Go's, to compare.
"""
